"""IAM's policy evaluation rules for identity-based policies, for the
least-privilege probes of `imagectl iam-policy` (tests/integration/iam.rs).

moto enforces actions only; real AWS also matches resources and evaluates
conditions. This module does the latter the way the IAM documentation says
(policy evaluation logic, condition operators, the `...IfExists` and
`Null` rules, set operators), and checks every condition key a policy uses
against the Service Authorization Reference (as packaged by policy_sentry,
which cloudsplaining installs): a key an action never carries would make a
condition silently never match.

    python tests/iam_eval.py PROBES.json

PROBES.json: {"policy": {...}, "probes": [{"name", "action", "resources":
[{"arn", "context": {...}}], "context": {...}, "expect": "allow"|"deny"}]}.
A request is allowed only when every resource it names is allowed (as EC2
authorizes RunInstances: the instance, the image, the subnet, ... each on
its own), with the request's context plus that resource's. Prints a JSON
report: every probe whose outcome differs from `expect`, and every
condition key that is not valid for the statement's actions.
"""

import fnmatch
import json
import re
import sys


def as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def wildcard(pattern, value, ignore_case=False):
    """IAM's wildcards: `*` any run of characters (`/` and `:` included),
    `?` one character; nothing else is special."""
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
    )
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, value, flags) is not None


def action_matches(pattern, action):
    # Service prefixes and action names are case-insensitive.
    return wildcard(pattern, action, ignore_case=True)


def arn_matches(pattern, arn):
    """ARN matching: each of the six colon-separated parts on its own, the
    last (resource) part with wildcards across `/`."""
    if pattern == "*":
        return True
    p = pattern.split(":", 5)
    a = arn.split(":", 5)
    if len(p) != 6 or len(a) != 6:
        return wildcard(pattern, arn)
    return all(wildcard(x, y) for x, y in zip(p, a))


def string_test(op, policy_value, value):
    ops = {
        "StringEquals": lambda: value == policy_value,
        "StringNotEquals": lambda: value != policy_value,
        "StringEqualsIgnoreCase": lambda: value.lower() == policy_value.lower(),
        "StringNotEqualsIgnoreCase": lambda: value.lower() != policy_value.lower(),
        "StringLike": lambda: wildcard(policy_value, value),
        "StringNotLike": lambda: not wildcard(policy_value, value),
        "ArnEquals": lambda: value == policy_value,
        "ArnNotEquals": lambda: value != policy_value,
        "ArnLike": lambda: arn_matches(policy_value, value),
        "ArnNotLike": lambda: not arn_matches(policy_value, value),
        "Bool": lambda: str(value).lower() == str(policy_value).lower(),
        "NumericEquals": lambda: float(value) == float(policy_value),
        "NumericLessThanEquals": lambda: float(value) <= float(policy_value),
        "NumericGreaterThanEquals": lambda: float(value) >= float(policy_value),
    }
    if op not in ops:
        raise ValueError(f"condition operator {op} is not implemented here")
    return ops[op]()


NEGATED = {
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
}


def lookup(context, key):
    """The values of `key` in the request context (keys are
    case-insensitive), or None when it is absent."""
    for k, v in context.items():
        if k.lower() == key.lower():
            return as_list(v)
    return None


def condition_holds(full_op, key, policy_values, context):
    policy_values = [str(v) for v in as_list(policy_values)]
    qualifier, _, op = full_op.rpartition(":")
    if_exists = op.endswith("IfExists")
    if if_exists:
        op = op[: -len("IfExists")]
    values = lookup(context, key)
    if op == "Null":
        absent = values is None
        return any(absent == (pv.lower() == "true") for pv in policy_values)
    if values is None:
        if if_exists:
            return True
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return op in NEGATED
    values = [str(v) for v in values]
    negated = op in NEGATED

    def one(value):
        if negated:
            # A negated operator holds when the value matches none of the
            # policy's values.
            return all(string_test(op, pv, value) for pv in policy_values)
        return any(string_test(op, pv, value) for pv in policy_values)

    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    if qualifier == "ForAnyValue":
        return any(one(v) for v in values)
    # A single-valued key; a multivalued one without a set operator counts
    # as matching when any value does.
    return any(one(v) for v in values)


def statement_matches(st, action, resource, context):
    if "Action" in st:
        if not any(action_matches(p, action) for p in as_list(st["Action"])):
            return False
    elif any(action_matches(p, action) for p in as_list(st.get("NotAction"))):
        return False
    if "Resource" in st:
        if not any(arn_matches(p, resource) for p in as_list(st["Resource"])):
            return False
    elif any(arn_matches(p, resource) for p in as_list(st.get("NotResource"))):
        return False
    for op, keys in st.get("Condition", {}).items():
        for key, policy_values in keys.items():
            if not condition_holds(op, key, policy_values, context):
                return False
    return True


def decide(policy, action, resource, context):
    """`allow`, or why not: an explicit deny wins, then an allow, else the
    implicit deny."""
    statements = as_list(policy.get("Statement"))
    for st in statements:
        if st.get("Effect") == "Deny" and statement_matches(st, action, resource, context):
            return f"explicit deny ({st.get('Sid', '?')})"
    for st in statements:
        if st.get("Effect") == "Allow" and statement_matches(st, action, resource, context):
            return "allow"
    return "implicit deny"


def evaluate(policy, probe):
    """`allow` when every resource of the request is allowed; otherwise the
    first resource refused and why."""
    for r in probe["resources"]:
        context = dict(probe.get("context", {}))
        context.update(r.get("context", {}))
        verdict = decide(policy, probe["action"], r["arn"], context)
        if verdict != "allow":
            return f"deny: {r['arn']}: {verdict}"
    return "allow"


def condition_keys_of(action):
    """Every condition key the Service Authorization Reference lists for
    `action` (over all its resource types), lowercased."""
    from policy_sentry.querying.actions import get_action_data

    service, name = action.split(":", 1)
    keys = set()
    for rows in get_action_data(service, name).values():
        for row in rows:
            for k in row.get("condition_keys") or []:
                keys.add(k.lower())
    return keys


def key_is_valid(key, valid):
    key = key.lower()
    for k in valid:
        # `aws:RequestTag/${TagKey}` stands for any tag key.
        pattern = re.sub(r"\$\{[^}]*\}", "*", k)
        if fnmatch.fnmatchcase(key, pattern):
            return True
    return False


GLOBAL_KEYS = ("aws:principal", "aws:sourceip", "aws:userid", "aws:username", "aws:securetransport", "aws:calledvia", "aws:viaawsservice", "aws:requestedregion")


def invalid_condition_keys(policy):
    """Condition keys no action of their statement carries."""
    problems = []
    for st in as_list(policy.get("Statement")):
        keys = [k for op in st.get("Condition", {}).values() for k in op]
        for action in as_list(st.get("Action")):
            if "*" in action:
                continue
            valid = condition_keys_of(action)
            for key in keys:
                if key.lower().startswith(GLOBAL_KEYS):
                    continue
                if not key_is_valid(key, valid):
                    problems.append(f"{st.get('Sid', '?')}: {action} has no condition key {key}")
    return problems


def main():
    spec = json.load(open(sys.argv[1]))
    policy = spec["policy"]
    wrong = []
    for probe in spec["probes"]:
        got = evaluate(policy, probe)
        outcome = "allow" if got == "allow" else "deny"
        if outcome != probe["expect"]:
            wrong.append({"probe": probe["name"], "expected": probe["expect"], "got": got})
    print(json.dumps({"wrong": wrong, "invalid_keys": invalid_condition_keys(policy), "probes": len(spec["probes"])}))


if __name__ == "__main__":
    main()

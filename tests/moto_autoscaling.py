"""EC2 Auto Scaling instance refreshes and lifecycle actions for moto's server.

moto 5.2.5 has no instance refreshes (StartInstanceRefresh,
DescribeInstanceRefreshes, CancelInstanceRefresh, RollbackInstanceRefresh),
no CompleteLifecycleAction or RecordLifecycleActionHeartbeat, and puts every
launched instance straight into `InService` even when the group has a launch
lifecycle hook. `install()` adds them to moto's Auto Scaling responses, on
moto's own groups, instances and launch templates, following the Amazon EC2
Auto Scaling API reference:

Instance refreshes. StartInstanceRefresh (Strategy `Rolling`; a
DesiredConfiguration with a LaunchTemplate; Preferences MinHealthyPercentage,
default 90, MaxHealthyPercentage, default 100, InstanceWarmup, default the
group's DefaultInstanceWarmup, else its HealthCheckGracePeriod, SkipMatching,
AutoRollback, ScaleInProtectedInstances and StandbyInstances, default
`Ignore`, BakeTime; CheckpointPercentages, CheckpointDelay and
AlarmSpecification are stored and described, not acted on) answers an
InstanceRefreshId, a UUID, and the refresh then really replaces the group's
instances: statuses Pending -> InProgress -> Successful | Failed | Cancelled |
RollbackSuccessful | RollbackFailed, with Cancelling, RollbackInProgress and
Baking between. Each batch terminates old instances (in EC2 too) and
launches replacements through moto's own FakeAutoScalingGroup launch code,
from the desired launch template version: real EC2 instances with that
version's ImageId. The batch size comes from MinHealthyPercentage and
MaxHealthyPercentage (max(1, floor(N*Max/100) - ceil(N*Min/100)) of a group
of N); old instances are always terminated before their replacements launch.
A replacement counts as updated once it is InService, Healthy and past its
warm-up; PercentageComplete and InstancesToUpdate count those against the
instances the refresh had to replace (SkipMatching leaves out instances
already on the desired launch template and version; if none is left the
refresh succeeds at once, 100%). As on AWS, the group keeps its own launch
template until the refresh succeeds; meanwhile every launch into the group
(replacements, scale-outs) uses the desired configuration. A replacement
marked Unhealthy, abandoned through a lifecycle hook or terminated before it
counts fails the refresh (StatusReason names the instance and why); with
AutoRollback, or on RollbackInstanceRefresh, the refresh goes
RollbackInProgress and replaces every instance it launched with one from the
group's launch template, PercentageComplete falling back to 0.

Lifecycle hooks. An instance launched into a group with an
`autoscaling:EC2_INSTANCE_LAUNCHING` hook waits in `Pending:Wait` until
CompleteLifecycleAction (by LifecycleActionToken or InstanceId) CONTINUEs it
(-> InService) or ABANDONs it (-> terminated, the group launches another), or
until the hook's HeartbeatTimeout passes and its DefaultResult applies;
RecordLifecycleActionHeartbeat restarts the timeout (up to the global timeout,
100 x HeartbeatTimeout or 48 h). Terminate hooks are not emulated.

Fixes to moto where it differs from AWS: DescribeAutoScalingInstances shows
HealthStatus in upper case (HEALTHY, UNHEALTHY) and each instance's own launch
template and version (moto showed the group's default version for all), and
pages by MaxRecords (at most 50) and NextToken; SetInstanceHealth accepts
ShouldRespectGracePeriod (respected, the default: an instance still inside the
group's HealthCheckGracePeriod is not marked Unhealthy), answers a
ValidationError for an unknown instance or health status instead of a 500;
CreateAutoScalingGroup's HealthCheckGracePeriod defaults to 0 as in the API
reference (moto used 300) and DefaultInstanceWarmup is kept and described;
pending instances count towards the group's capacity; deleting a group
deletes its lifecycle hooks and instance refreshes.

Not emulated: a MixedInstancesPolicy in the DesiredConfiguration and the
ReplaceRootVolume strategy (both answer a ValidationError saying so),
checkpoints and alarms (stored and described only), warm pools, terminate
lifecycle hooks, scaling activities, and the replacement of an Unhealthy
instance outside a refresh (moto leaves it in the group).

Time. Nothing runs in the background: whenever an Auto Scaling (or EC2)
request arrives, before it is answered, every refresh and lifecycle action of
that account and Region is brought up to date by wall-clock time, under one
lock. A refresh moves one step per IMAGECTL_MOTO_REFRESH_STEP_SECS seconds
(default 1.0): Pending -> InProgress, launching one batch, or finishing one
batch once its instances are InService, Healthy and warm. Waits that AWS
measures in seconds (InstanceWarmup, BakeTime, HeartbeatTimeout) last that
many seconds times IMAGECTL_MOTO_TIME_SCALE (default 1.0, real time).
"""

import math
import os
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.models import (
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    autoscaling_backends,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.responses import EC2Response


def _env_seconds(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SystemExit(f"{name}={raw!r}: must be a positive number")
    return value


STEP_SECS = _env_seconds("IMAGECTL_MOTO_REFRESH_STEP_SECS", 1.0)
TIME_SCALE = _env_seconds("IMAGECTL_MOTO_TIME_SCALE", 1.0)

LOCK = threading.RLock()

ACTIVE = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
PENDING_STATES = ("Pending", "Pending:Wait", "Pending:Proceed")
GLOBAL_TIMEOUT = 172800


class InstanceRefreshInProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"
    message = "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh."


class ActiveInstanceRefreshNotFound(AutoscalingClientError):
    code = "ActiveInstanceRefreshNotFound"

    def __init__(self, group_name):
        super().__init__(
            f"No in progress or pending Instance Refresh found for Auto Scaling group {group_name}"
        )


class IrreversibleInstanceRefresh(AutoscalingClientError):
    code = "IrreversibleInstanceRefresh"


class InvalidNextToken(AutoscalingClientError):
    code = "InvalidNextToken"
    message = "The token is not valid."


# moto finds an error's HTTP status in the model of the service its module
# names: this module's name starts with "moto" too, so name Auto Scaling's.
for _error in (
    InstanceRefreshInProgress,
    ActiveInstanceRefreshNotFound,
    IrreversibleInstanceRefresh,
    InvalidNextToken,
):
    _error.__module__ = "moto.autoscaling.exceptions"


# The clock. Steps happen at the time they were due, not when a request
# noticed them, so that what a step sees does not depend on how often
# clients poll.
_clock = threading.local()


def _now():
    return getattr(_clock, "t", None) or time.time()


@contextmanager
def _at(t):
    saved = getattr(_clock, "t", None)
    _clock.t = t
    try:
        yield
    finally:
        _clock.t = saved


def _dt(t):
    return datetime.fromtimestamp(t, timezone.utc)


def _scaled(seconds):
    return float(seconds or 0) * TIME_SCALE


# Per account and Region: refreshes by group, newest last, and why an
# instance the wrapper watched went away.
def _state(backend):
    st = getattr(backend, "_imagectl_state", None)
    if st is None:
        st = {"refreshes": {}, "gone": {}}
        backend._imagectl_state = st
    return st


def _group(backend, name):
    group = backend.autoscaling_groups.get(name) if name else None
    if group is None:
        raise ValidationError(
            f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found"
        )
    return group


def _refreshes(backend, group_name):
    return _state(backend)["refreshes"].setdefault(group_name, [])


def _active_refresh(backend, group_name):
    for r in reversed(_state(backend)["refreshes"].get(group_name, [])):
        if r.status in ACTIVE:
            return r
    return None


def _launch_hooks(backend, group):
    return [
        h
        for h in backend.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group.name and h.lifecycle_transition == LAUNCHING
    ]


def _find_state(group, instance_id):
    for s in group.instance_states:
        if s.instance.id == instance_id:
            return s
    return None


def _group_version(group):
    """The group's launch template version as it specifies it, or None."""
    return getattr(group, "provided_launch_template_version", None)


def _group_version_effective(group):
    return getattr(group, "launch_template_version", None) or "$Default"


# ---------------------------------------------------------------------------
# Launching: every instance moto launches into a group goes through
# FakeAutoScalingGroup.replace_autoscaling_group_instances, which this wraps
# to launch from an active refresh's desired launch template, to remember
# each instance's own launch template and version, and to hold it in
# Pending:Wait for launch lifecycle hooks.

_orig_replace = FakeAutoScalingGroup.replace_autoscaling_group_instances

_MISSING = object()


@contextmanager
def _launching_from(group, target):
    if target is None:
        yield
        return
    names = (
        "ec2_launch_template",
        "launch_template_version",
        "provided_launch_template_version",
        "launch_config",
    )
    saved = {n: getattr(group, n, _MISSING) for n in names}
    group.ec2_launch_template = target["template"]
    group.launch_template_version = target["version"]
    group.provided_launch_template_version = target["version"]
    group.launch_config = None
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is _MISSING:
                delattr(group, n)
            else:
                setattr(group, n, v)


def _launch_target(group):
    """The refresh whose desired configuration launches into this group now."""
    backend = group.autoscaling_backend
    r = _active_refresh(backend, group.name)
    if r is not None and r.target is not None and r.status in ("Pending", "InProgress", "Baking"):
        return r
    return None


def replace_autoscaling_group_instances(self, count_needed, propagated_tags):
    refresh = _launch_target(self)
    target = refresh.target if refresh is not None else None
    before = {id(s) for s in self.instance_states}
    with _launching_from(self, target):
        _orig_replace(self, count_needed, propagated_tags)
        new = [s for s in self.instance_states if id(s) not in before]
        lt = self.ec2_launch_template
        for s in new:
            if lt is not None:
                version = _group_version(self)
                number = lt.get_version(_group_version_effective(self)).number
                s._ic_lt = {
                    "LaunchTemplateId": lt.id,
                    "LaunchTemplateName": lt.name,
                    "Version": str(version) if version else str(number),
                }
                s._ic_lt_number = number
                s._ic_lc = None
            else:
                s._ic_lt = None
                s._ic_lt_number = None
                s._ic_lc = getattr(self, "launch_configuration_name", None)
            s._ic_refresh = refresh.id if refresh is not None else None
    now = _now()
    hooks = _launch_hooks(self.autoscaling_backend, self)
    for s in new:
        if hooks:
            s.lifecycle_state = "Pending:Wait"
            s._ic_inservice_at = None
            s._ic_actions = {}
            for h in hooks:
                timeout = int(h.heartbeat_timeout)
                s._ic_actions[h.name] = {
                    "token": str(uuid.uuid4()),
                    "deadline": now + _scaled(timeout),
                    "global_deadline": now + _scaled(min(100 * timeout, GLOBAL_TIMEOUT)),
                    "timeout": timeout,
                    "default": h.default_result or "ABANDON",
                }
        else:
            s._ic_inservice_at = now
            s._ic_actions = {}
    return new


def _instance_launch_template(self):
    if hasattr(self, "_ic_lt"):
        return dict(self._ic_lt) if self._ic_lt is not None else None
    return _orig_instance_lt.fget(self)


def _instance_launch_configuration_name(self):
    if hasattr(self, "_ic_lc"):
        return self._ic_lc
    return _orig_instance_lc.fget(self)


_orig_instance_lt = InstanceState.launch_template
_orig_instance_lc = InstanceState.launch_configuration_name


def active_instances(self):
    """Instances that count towards the group's capacity: pending ones too."""
    return [
        x for x in self.instance_states if x.lifecycle_state in ("InService",) + PENDING_STATES
    ]


def _terminate(backend, group, states, reason=None):
    """Takes instances out of the group and terminates them in EC2."""
    if not states:
        return
    ids = [s.instance.id for s in states]
    group.instance_states = [s for s in group.instance_states if s.instance.id not in ids]
    for iid in ids:
        if reason:
            _state(backend)["gone"][iid] = reason
    backend.ec2_backend.terminate_instances(ids)
    backend.update_attached_elbs(group.name)
    backend.update_attached_target_groups(group.name)


def _top_up(backend, group):
    """Launches what the group lacks of its desired capacity."""
    if group.name in backend.autoscaling_groups:
        group.set_desired_capacity(group.desired_capacity)


# ---------------------------------------------------------------------------
# Lifecycle actions.


def _finish_action(backend, group, state, hook_name, result, how, t):
    del state._ic_actions[hook_name]
    if result == "ABANDON":
        state.lifecycle_state = "Terminating"
        _terminate(
            backend,
            group,
            [state],
            reason=f"its launch lifecycle hook {hook_name} {how} ABANDON and it was terminated",
        )
        _check_failures(backend, t)
        _top_up(backend, group)
    elif not state._ic_actions:
        state.lifecycle_state = "InService"
        state._ic_inservice_at = t
        backend.update_attached_elbs(group.name)


def _expire_actions(backend, now):
    """Applies the DefaultResult of every lifecycle action whose timeout passed
    (at most 1000 at a time: an abandoned launch is replaced by another that
    may time out in turn)."""
    for _ in range(1000):
        due = []
        for group in list(backend.autoscaling_groups.values()):
            for s in group.instance_states:
                for name, a in getattr(s, "_ic_actions", {}).items():
                    deadline = min(a["deadline"], a["global_deadline"])
                    if deadline <= now:
                        due.append((deadline, group, s, name, a))
        if not due:
            return
        due.sort(key=lambda d: d[0])
        deadline, group, s, name, a = due[0]
        with _at(deadline):
            _finish_action(
                backend, group, s, name, a["default"], "timed out with DefaultResult", deadline
            )


def _pending_action(backend, group, hook_name, token, instance_id):
    if token:
        for s in group.instance_states:
            a = getattr(s, "_ic_actions", {}).get(hook_name)
            if a is not None and a["token"] == token:
                return s
        raise ValidationError(f"No active Lifecycle Action found with token {token}")
    s = _find_state(group, instance_id) if instance_id else None
    if s is None or hook_name not in getattr(s, "_ic_actions", {}):
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
    return s


def _lifecycle_action_target(self):
    hook_name = self._get_param("LifecycleHookName")
    group_name = self._get_param("AutoScalingGroupName")
    token = self._get_param("LifecycleActionToken")
    instance_id = self._get_param("InstanceId")
    backend = self.autoscaling_backend
    group = _group(backend, group_name)
    if not token and not instance_id:
        raise ValidationError("Either LifecycleActionToken or InstanceId must be specified.")
    return backend, group, hook_name, _pending_action(backend, group, hook_name, token, instance_id)


def complete_lifecycle_action(self):
    result = self._get_param("LifecycleActionResult")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(
            f"Value '{result}' at 'lifecycleActionResult' failed to satisfy constraint: "
            "Member must be one of CONTINUE, ABANDON"
        )
    backend, group, hook_name, state = _lifecycle_action_target(self)
    t = _now()
    _finish_action(backend, group, state, hook_name, result, "was completed with", t)
    return EmptyResult()


def record_lifecycle_action_heartbeat(self):
    _, _, hook_name, state = _lifecycle_action_target(self)
    a = state._ic_actions[hook_name]
    a["deadline"] = _now() + _scaled(a["timeout"])
    return EmptyResult()


# ---------------------------------------------------------------------------
# Instance refreshes.


def _percent(done, total):
    return 100 if total == 0 else int(math.floor(100 * done / total))


class Refresh:
    def __init__(self, group, strategy, desired, target, preferences, t):
        self.id = str(uuid.uuid4())
        self.group_name = group.name
        self.strategy = strategy
        self.desired = desired
        self.target = target
        self.preferences = preferences
        self.status = "Pending"
        self.status_reason = None
        self.start_time = t
        self.end_time = None
        self.next_step_at = t + STEP_SECS
        self.to_replace = []
        self.total = 0
        self.updated = []
        self.batch = None
        self.bake_until = None
        self.rollback = None
        self.rollback_queue = []
        self.cancel_waits = True

    # -- what instances it replaces

    def matches(self, group, s):
        if self.target is not None:
            lt, number = self.target["template"], self.target["number"]
        else:
            lt = group.ec2_launch_template
            if lt is None:
                return False
            number = lt.get_version(_group_version_effective(group)).number
        spec = getattr(s, "_ic_lt", None)
        return bool(spec) and spec["LaunchTemplateId"] == lt.id and s._ic_lt_number == number

    def eligible(self, s):
        prefs = self.preferences
        if s.lifecycle_state.startswith("Standby"):
            return prefs["StandbyInstances"] == "Terminate"
        if s.protected_from_scale_in:
            return prefs["ScaleInProtectedInstances"] == "Refresh"
        return s.lifecycle_state in ("InService",) + PENDING_STATES

    def select_old(self, group):
        prefs = self.preferences
        chosen = []
        for s in group.instance_states:
            if s.lifecycle_state.startswith("Standby") and prefs["StandbyInstances"] == "Ignore":
                continue
            if s.protected_from_scale_in and prefs["ScaleInProtectedInstances"] == "Ignore":
                continue
            if prefs["SkipMatching"] and self.matches(group, s):
                continue
            chosen.append(s.instance.id)
        self.to_replace = chosen
        self.total = len(chosen)

    # -- progress

    def batch_size(self, group, remaining):
        n = group.desired_capacity or len(group.instance_states) or 1
        min_healthy = math.ceil(n * self.preferences["MinHealthyPercentage"] / 100)
        max_total = math.floor(n * self.preferences["MaxHealthyPercentage"] / 100)
        return max(1, min(remaining, max_total - min_healthy))

    def updated_still_new(self, group):
        ids = {s.instance.id for s in group.instance_states}
        return [i for i in self.updated if i in ids]

    def progress(self, group):
        """PercentageComplete and InstancesToUpdate as described now."""
        if self.status in ("RollbackInProgress", "RollbackSuccessful", "RollbackFailed"):
            remaining = len(self.updated_still_new(group)) if group is not None else 0
            return _percent(remaining, self.total) if self.total else 0, self.rollback[
                "InstancesToUpdateOnRollback"
            ]
        done = len(self.updated)
        return _percent(done, self.total), self.total - done

    # -- the state machine

    def step(self, backend, group, t):
        """One step at time t: returns None when it took a step, else the
        time it waits for (a float), or 0 when it waits for something else
        (a lifecycle action, an instance to be eligible)."""
        if self.status == "Pending":
            self.status = "InProgress"
            return None
        if self.status == "Baking":
            if t >= self.bake_until:
                self.succeed(group, t)
                return None
            return self.bake_until
        if self.batch is not None:
            if self.status == "Cancelling" and not self.cancel_waits:
                self.batch = None
                return self.step(backend, group, t)
            wait = self.batch_ready(group, t)
            if wait is not None:
                return wait
            if self.status != "RollbackInProgress":
                self.updated.extend(self.batch["new"])
            self.batch = None
            if self.rollback is None or not self.rollback["auto"]:
                self.status_reason = None
            return None
        if self.status == "Cancelling":
            self.status = "Cancelled"
            self.end_time = t
            return None
        rolling_back = self.status == "RollbackInProgress"
        queue = self.rollback_queue if rolling_back else self.to_replace
        present = {s.instance.id: s for s in group.instance_states}
        for iid in [i for i in queue if i not in present]:
            queue.remove(iid)
            if not rolling_back:
                self.total -= 1
        if not queue:
            if rolling_back:
                self.status = "RollbackSuccessful"
                self.end_time = t
            elif self.preferences.get("BakeTime"):
                self.status = "Baking"
                self.bake_until = t + _scaled(self.preferences["BakeTime"])
            else:
                self.succeed(group, t)
            return None
        eligible = [i for i in queue if rolling_back or self.eligible(present[i])]
        if not eligible:
            self.status_reason = (
                f"Waiting for instances to become eligible for replacement. "
                f"For example: {queue[0]} is {present[queue[0]].lifecycle_state}."
            )
            return 0
        old = eligible[: self.batch_size(group, len(eligible))]
        for iid in old:
            queue.remove(iid)
        _terminate(backend, group, [present[i] for i in old])
        new = group.replace_autoscaling_group_instances(len(old), group.get_propagated_tags())
        self.batch = {"old": old, "new": [s.instance.id for s in new]}
        return None

    def batch_ready(self, group, t):
        warmup = _scaled(self.preferences["InstanceWarmup"])
        latest = None
        for iid in self.batch["new"]:
            s = _find_state(group, iid)
            if s is None:
                return 0
            if s.lifecycle_state != "InService" or s._ic_inservice_at is None:
                self.status_reason = (
                    "Waiting for instances to complete lifecycle actions before continuing. "
                    f"For example: {iid} is {s.lifecycle_state}."
                )
                return 0
            if s.health_status != "Healthy":
                return 0
            warm_at = s._ic_inservice_at + warmup
            if warm_at > t and (latest is None or warm_at > latest[0]):
                latest = (warm_at, iid)
        if latest is not None:
            self.status_reason = (
                "Waiting for instances to warm up before continuing. "
                f"For example: {latest[1]} is warming up."
            )
            return latest[0]
        return None

    def succeed(self, group, t):
        self.status = "Successful"
        self.status_reason = None
        self.end_time = t
        if self.target is not None:
            group.ec2_launch_template = self.target["template"]
            group.launch_template_version = self.target["version"]
            group.provided_launch_template_version = self.target["version"]
            group.launch_config = None
            if getattr(group, "launch_configuration_name", None):
                group.launch_configuration_name = None

    def fail(self, group, reason, t):
        if self.status == "RollbackInProgress":
            self.status = "RollbackFailed"
            self.status_reason = reason
            self.end_time = t
            self.batch = None
        elif self.preferences["AutoRollback"] and self.status != "Cancelling":
            self.start_rollback(group, reason, t, auto=True)
        else:
            self.status = "Failed"
            self.status_reason = reason
            self.end_time = t
            self.batch = None

    def start_rollback(self, group, reason, t, auto):
        pct, to_update = self.progress(group)
        self.rollback = {
            "RollbackReason": reason,
            "RollbackStartTime": t,
            "PercentageCompleteOnRollback": pct,
            "InstancesToUpdateOnRollback": to_update,
            "auto": auto,
        }
        self.status = "RollbackInProgress"
        self.status_reason = reason if auto else None
        self.batch = None
        self.to_replace = []
        self.rollback_queue = [
            s.instance.id for s in group.instance_states if getattr(s, "_ic_refresh", None) == self.id
        ]
        self.next_step_at = t + STEP_SECS

    def check_failure(self, backend, group, t):
        if self.batch is None or self.status not in ("InProgress", "Cancelling", "RollbackInProgress"):
            return
        for iid in self.batch["new"]:
            s = _find_state(group, iid)
            if s is None:
                why = _state(backend)["gone"].get(iid, "it was terminated")
            elif s.health_status == "Unhealthy":
                why = "it failed its health checks and was marked Unhealthy"
            else:
                continue
            what = "rollback" if self.status == "RollbackInProgress" else "instance refresh"
            self.fail(
                group,
                f"The {what} failed because instance {iid}, launched to replace "
                f"{', '.join(self.batch['old'])}, did not become healthy: {why}.",
                t,
            )
            return

    def describe(self, group):
        pct, to_update = self.progress(group)
        d = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group_name,
            "Status": self.status,
            "StatusReason": self.status_reason,
            "StartTime": _dt(self.start_time),
            "EndTime": _dt(self.end_time) if self.end_time is not None else None,
            "PercentageComplete": pct,
            "InstancesToUpdate": to_update,
            "ProgressDetails": {
                "LivePoolProgress": {"PercentageComplete": pct, "InstancesToUpdate": to_update}
            },
            "Preferences": self.preferences,
            "DesiredConfiguration": self.desired,
            "Strategy": self.strategy,
        }
        if self.rollback is not None:
            rb = self.rollback
            d["RollbackDetails"] = {
                "RollbackReason": rb["RollbackReason"],
                "RollbackStartTime": _dt(rb["RollbackStartTime"]),
                "PercentageCompleteOnRollback": rb["PercentageCompleteOnRollback"],
                "InstancesToUpdateOnRollback": rb["InstancesToUpdateOnRollback"],
                "ProgressDetailsOnRollback": {
                    "LivePoolProgress": {
                        "PercentageComplete": rb["PercentageCompleteOnRollback"],
                        "InstancesToUpdate": rb["InstancesToUpdateOnRollback"],
                    }
                },
            }
        return d


def _check_failures(backend, t):
    for name, refreshes in _state(backend)["refreshes"].items():
        group = backend.autoscaling_groups.get(name)
        for r in refreshes:
            if r.status in ACTIVE and group is not None:
                r.check_failure(backend, group, t)


def _advance(backend):
    """Brings every lifecycle action and refresh of this backend up to now."""
    now = time.time()
    _expire_actions(backend, now)
    _check_failures(backend, now)
    for name, refreshes in list(_state(backend)["refreshes"].items()):
        for r in refreshes:
            if r.status not in ACTIVE:
                continue
            group = backend.autoscaling_groups.get(name)
            if group is None:
                r.status = "Cancelled"
                r.status_reason = "The Auto Scaling group was deleted."
                r.end_time = now
                continue
            while r.status in ACTIVE and r.next_step_at <= now:
                t = r.next_step_at
                with _at(t):
                    r.check_failure(backend, group, t)
                    if r.status not in ACTIVE:
                        break
                    wait = r.step(backend, group, t)
                if wait is None:
                    r.next_step_at = t + STEP_SECS
                elif wait > t:
                    r.next_step_at = wait
                else:
                    r.next_step_at = now
                    break


# -- parameters


def _resolve_template(backend, spec):
    spec = spec or {}
    lt_id = spec.get("LaunchTemplateId")
    lt_name = spec.get("LaunchTemplateName")
    if bool(lt_id) == bool(lt_name):
        raise ValidationError(
            "Valid requests must contain either launchTemplateId or LaunchTemplateName"
        )
    ec2 = backend.ec2_backend
    template = None
    if lt_id:
        template = ec2.launch_templates.get(lt_id)
    elif lt_name in ec2.launch_template_name_to_ids:
        template = ec2.launch_templates.get(ec2.launch_template_name_to_ids[lt_name])
    if template is None:
        which = f"ID '{lt_id}'" if lt_id else f"name '{lt_name}'"
        raise ValidationError(
            f"You must use a valid fully-formed launch template. "
            f"The specified launch template, with template {which}, does not exist."
        )
    version = str(spec.get("Version") or "$Default")
    if version.lower() == "$latest":
        number = template.latest_version_number
    elif version.lower() == "$default":
        number = template.default_version_number
    elif version.isdigit() and 1 <= int(version) <= len(template.versions):
        number = int(version)
    else:
        raise ValidationError(
            f"You must use a valid fully-formed launch template. The specified launch "
            f"template, with template ID '{template.id}', version '{version}', does not exist."
        )
    return {"template": template, "version": version, "number": number}


def _preferences(self, group):
    given = self._get_param("Preferences") or {}
    prefs = dict(given)
    mn = prefs.get("MinHealthyPercentage")
    mx = prefs.get("MaxHealthyPercentage")
    if mx is not None and mn is None:
        raise ValidationError(
            "The MinHealthyPercentage must be specified when MaxHealthyPercentage is specified."
        )
    prefs["MinHealthyPercentage"] = 90 if mn is None else int(mn)
    prefs["MaxHealthyPercentage"] = 100 if mx is None else int(mx)
    if not 0 <= prefs["MinHealthyPercentage"] <= 100:
        raise ValidationError("MinHealthyPercentage must be between 0 and 100.")
    if not 100 <= prefs["MaxHealthyPercentage"] <= 200:
        raise ValidationError("MaxHealthyPercentage must be between 100 and 200.")
    if prefs["MaxHealthyPercentage"] - prefs["MinHealthyPercentage"] > 100:
        raise ValidationError(
            "The MaxHealthyPercentage minus the MinHealthyPercentage cannot be greater than 100."
        )
    if prefs.get("InstanceWarmup") is None:
        warmup = getattr(group, "default_instance_warmup", None)
        if warmup is None or warmup < 0:
            warmup = group.health_check_grace_period or 0
        prefs["InstanceWarmup"] = int(warmup)
    prefs["SkipMatching"] = bool(prefs.get("SkipMatching", False))
    prefs["AutoRollback"] = bool(prefs.get("AutoRollback", False))
    for key, allowed in (
        ("ScaleInProtectedInstances", ("Refresh", "Ignore", "Wait")),
        ("StandbyInstances", ("Terminate", "Ignore", "Wait")),
    ):
        value = prefs.get(key) or "Ignore"
        if value not in allowed:
            raise ValidationError(f"{key} must be one of {', '.join(allowed)}.")
        prefs[key] = value
    return prefs


def _irreversible_reason(group, desired):
    """Why the group's current configuration can't be rolled back to, or None."""
    if not desired:
        return "no desired configuration was specified for the instance refresh"
    if group.ec2_launch_template is not None:
        version = _group_version(group)
        if version is None or str(version).lower() in ("$latest", "$default"):
            return "the Auto Scaling group uses the launch template's $Latest or $Default version"
    return None


# -- the actions


def start_instance_refresh(self):
    backend = self.autoscaling_backend
    group = _group(backend, self._get_param("AutoScalingGroupName"))
    if _active_refresh(backend, group.name) is not None:
        raise InstanceRefreshInProgress()
    strategy = self._get_param("Strategy") or "Rolling"
    if strategy != "Rolling":
        raise ValidationError(
            f"The Strategy {strategy} is not supported by this emulator; only Rolling is."
            if strategy == "ReplaceRootVolume"
            else f"Value '{strategy}' at 'strategy' failed to satisfy constraint: "
            "Member must be one of Rolling, ReplaceRootVolume"
        )
    desired = self._get_param("DesiredConfiguration") or None
    target = None
    if desired:
        if desired.get("MixedInstancesPolicy"):
            raise ValidationError(
                "A MixedInstancesPolicy in the DesiredConfiguration is not supported by this emulator."
            )
        target = _resolve_template(backend, desired.get("LaunchTemplate"))
        desired = {
            "LaunchTemplate": {
                "LaunchTemplateId": target["template"].id,
                "LaunchTemplateName": target["template"].name,
                "Version": target["version"],
            }
        }
    prefs = _preferences(self, group)
    if prefs["AutoRollback"]:
        if not desired:
            raise ValidationError(
                "The request isn't valid. The AutoRollback parameter cannot be set to true when "
                "the DesiredConfiguration parameter is empty. Set AutoRollback to false or "
                "specify a desired configuration and try again."
            )
        why = _irreversible_reason(group, desired)
        if why:
            raise ValidationError(
                "The request isn't valid. The AutoRollback parameter cannot be set to true when "
                f"{why}. Set AutoRollback to false or specify a launch template version number "
                "on the Auto Scaling group and try again."
            )
    t = _now()
    r = Refresh(group, strategy, desired, target, prefs, t)
    r.select_old(group)
    _refreshes(backend, group.name).append(r)
    if r.total == 0:
        r.succeed(group, t)
    return ActionResult({"InstanceRefreshId": r.id})


def describe_instance_refreshes(self):
    backend = self.autoscaling_backend
    group_name = self._get_param("AutoScalingGroupName")
    group = _group(backend, group_name)
    ids = self._get_param("InstanceRefreshIds") or []
    max_records = self._get_int_param("MaxRecords") or 50
    if not 1 <= max_records <= 100:
        raise ValidationError("MaxRecords must be between 1 and 100.")
    refreshes = [r for r in reversed(_refreshes(backend, group.name)) if not ids or r.id in ids]
    token = self._get_param("NextToken")
    start = 0
    if token:
        try:
            start = int(token)
        except ValueError:
            raise InvalidNextToken()
        if not 0 <= start <= len(refreshes):
            raise InvalidNextToken()
    page = refreshes[start : start + max_records]
    next_token = str(start + max_records) if start + max_records < len(refreshes) else None
    return ActionResult(
        {"InstanceRefreshes": [r.describe(group) for r in page], "NextToken": next_token}
    )


def cancel_instance_refresh(self):
    backend = self.autoscaling_backend
    group = _group(backend, self._get_param("AutoScalingGroupName"))
    r = _active_refresh(backend, group.name)
    if r is None or r.status == "Cancelling":
        raise ActiveInstanceRefreshNotFound(group.name)
    wait = self._get_param("WaitForTransitioningInstances")
    r.cancel_waits = True if wait is None else bool(wait)
    r.status = "Cancelling"
    r.next_step_at = min(r.next_step_at, _now() + STEP_SECS)
    return ActionResult({"InstanceRefreshId": r.id})


def rollback_instance_refresh(self):
    backend = self.autoscaling_backend
    group = _group(backend, self._get_param("AutoScalingGroupName"))
    r = _active_refresh(backend, group.name)
    if r is None or r.status == "RollbackInProgress":
        raise ActiveInstanceRefreshNotFound(group.name)
    why = _irreversible_reason(group, r.desired)
    if why:
        raise IrreversibleInstanceRefresh(
            f"The instance refresh {r.id} can't be rolled back because {why}."
        )
    r.start_rollback(group, "Rollback started by user", _now(), auto=False)
    return ActionResult({"InstanceRefreshId": r.id})


# ---------------------------------------------------------------------------
# Fixes to moto's own actions.


def set_instance_health(self):
    instance_id = self._get_param("InstanceId")
    health = self._get_param("HealthStatus")
    respect = self._get_param("ShouldRespectGracePeriod")
    respect = True if respect is None else bool(respect)
    if health not in ("Healthy", "Unhealthy"):
        raise ValidationError("Valid instance health states are: [Healthy, Unhealthy].")
    backend = self.autoscaling_backend
    for group in backend.autoscaling_groups.values():
        s = _find_state(group, instance_id)
        if s is not None:
            break
    else:
        raise ValidationError(
            f"Instance Id not found - No managed instance found for instance ID: {instance_id}"
        )
    t = _now()
    if health == "Unhealthy" and respect and group.health_check_grace_period:
        since = getattr(s, "_ic_inservice_at", 0.0)
        if since is None or t < since + _scaled(group.health_check_grace_period):
            return EmptyResult()
    s.health_status = health
    _check_failures(backend, t)
    return EmptyResult()


def describe_auto_scaling_instances(self):
    ids = self._get_param("InstanceIds") or []
    max_records = self._get_int_param("MaxRecords") or 50
    if not 1 <= max_records <= 50:
        raise ValidationError("MaxRecords must be between 1 and 50.")
    states = self.autoscaling_backend.describe_auto_scaling_instances(instance_ids=ids)
    token = self._get_param("NextToken")
    start = 0
    if token:
        try:
            start = int(token)
        except ValueError:
            raise InvalidNextToken()
        if not 0 <= start <= len(states):
            raise InvalidNextToken()
    page = states[start : start + max_records]
    next_token = str(start + max_records) if start + max_records < len(states) else None
    instances = [
        {
            "InstanceId": s.instance.id,
            "InstanceType": s.instance_type,
            "AutoScalingGroupName": s.auto_scaling_group_name,
            "AvailabilityZone": s.availability_zone,
            "LifecycleState": s.lifecycle_state,
            "HealthStatus": s.health_status.upper(),
            "LaunchConfigurationName": getattr(s, "launch_configuration_name", None),
            "LaunchTemplate": s.launch_template,
            "ProtectedFromScaleIn": bool(s.protected_from_scale_in),
        }
        for s in page
    ]
    return ActionResult({"AutoScalingInstances": instances, "NextToken": next_token})


_orig_create_group = AutoScalingResponse.create_auto_scaling_group
_orig_update_group = AutoScalingResponse.update_auto_scaling_group
_orig_delete_group = AutoScalingBackend.delete_auto_scaling_group


def create_auto_scaling_group(self):
    result = _orig_create_group(self)
    group = self.autoscaling_backend.autoscaling_groups[self._get_param("AutoScalingGroupName")]
    if self._get_int_param("HealthCheckGracePeriod") is None:
        group.health_check_grace_period = 0
    group.default_instance_warmup = self._get_int_param("DefaultInstanceWarmup")
    return result


def update_auto_scaling_group(self):
    result = _orig_update_group(self)
    warmup = self._get_int_param("DefaultInstanceWarmup")
    if warmup is not None:
        group = self.autoscaling_backend.autoscaling_groups[self._get_param("AutoScalingGroupName")]
        group.default_instance_warmup = warmup
    return result


def delete_auto_scaling_group(self, group_name):
    _orig_delete_group(self, group_name)
    for key, hook in list(self.lifecycle_hooks.items()):
        if hook.auto_scaling_group_name == group_name:
            del self.lifecycle_hooks[key]
    _state(self)["refreshes"].pop(group_name, None)


# ---------------------------------------------------------------------------
# Every Auto Scaling and EC2 request first brings this account and Region
# up to date, under the lock that also serialises the answer.

_orig_as_call_action = AutoScalingResponse.call_action
_orig_ec2_call_action = EC2Response.call_action


def _as_call_action(self):
    with LOCK:
        _advance(self.autoscaling_backend)
        return _orig_as_call_action(self)


def _ec2_call_action(self):
    with LOCK:
        _advance(autoscaling_backends[self.current_account][self.region])
        return _orig_ec2_call_action(self)


def install():
    """Patches moto's Auto Scaling (and EC2 dispatch) in this process."""
    if getattr(AutoScalingResponse, "_imagectl_installed", False):
        return
    AutoScalingResponse._imagectl_installed = True
    FakeAutoScalingGroup.replace_autoscaling_group_instances = replace_autoscaling_group_instances
    FakeAutoScalingGroup.active_instances = active_instances
    InstanceState.launch_template = property(_instance_launch_template)
    InstanceState.launch_configuration_name = property(_instance_launch_configuration_name)
    AutoScalingBackend.delete_auto_scaling_group = delete_auto_scaling_group
    AutoScalingResponse.start_instance_refresh = start_instance_refresh
    AutoScalingResponse.describe_instance_refreshes = describe_instance_refreshes
    AutoScalingResponse.cancel_instance_refresh = cancel_instance_refresh
    AutoScalingResponse.rollback_instance_refresh = rollback_instance_refresh
    AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action
    AutoScalingResponse.record_lifecycle_action_heartbeat = record_lifecycle_action_heartbeat
    AutoScalingResponse.set_instance_health = set_instance_health
    AutoScalingResponse.describe_auto_scaling_instances = describe_auto_scaling_instances
    AutoScalingResponse.create_auto_scaling_group = create_auto_scaling_group
    AutoScalingResponse.update_auto_scaling_group = update_auto_scaling_group
    AutoScalingResponse.call_action = _as_call_action
    EC2Response.call_action = _ec2_call_action

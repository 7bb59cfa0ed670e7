"""Tests of tests/moto_autoscaling.py: instance refreshes and lifecycle
actions, driven with boto3 against tests/moto_server.py on a free loopback
port.

Run from the repository root with the venv's Python:
    python -m unittest -v tests/test_moto_autoscaling.py
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

SERVER = Path(__file__).resolve().with_name("moto_server.py")
REGION = "eu-west-1"
DEADLINE = 60  # seconds any wait may take before the test fails


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """tests/moto_server.py on a free loopback port, in its own process."""

    def __init__(self, env):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        full_env = dict(os.environ)
        for name in list(full_env):
            if name.startswith("AWS_") or name.startswith("IMAGECTL_MOTO_"):
                del full_env[name]
        full_env.update(env)
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 120  # importing moto is slow on a loaded machine
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{self.output()}")
                time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def client(self, service):
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}),
        )

    def output(self):
        """The server's log, less its request lines."""
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").splitlines()
        return "\n".join(line for line in lines if '"POST / HTTP' not in line)[-5000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class AutoScalingCase(unittest.TestCase):
    """One server for the class; every test makes its own launch template
    and group, so tests do not see each other's."""

    ENV = {"IMAGECTL_MOTO_REFRESH_STEP_SECS": "0.1"}

    @classmethod
    def setUpClass(cls):
        cls.server = MotoServer(cls.ENV)
        cls.ec2 = cls.server.client("ec2")
        cls.asg = cls.server.client("autoscaling")
        cls.ami_v1, cls.ami_v2 = (
            cls.ec2.register_image(
                Name=f"golden-{version}",
                RootDeviceName="/dev/xvda",
                Architecture="x86_64",
                VirtualizationType="hvm",
            )["ImageId"]
            for version in ("v1", "v2")
        )

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    # -- fixtures

    def name(self, prefix):
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def template(self):
        """A launch template: version 1 on ami_v1, version 2 on ami_v2."""
        lt = self.ec2.create_launch_template(
            LaunchTemplateName=self.name("lt"),
            LaunchTemplateData={"ImageId": self.ami_v1, "InstanceType": "t3.micro"},
        )["LaunchTemplate"]
        self.ec2.create_launch_template_version(
            LaunchTemplateId=lt["LaunchTemplateId"],
            LaunchTemplateData={"ImageId": self.ami_v2, "InstanceType": "t3.micro"},
        )
        return lt["LaunchTemplateId"]

    def group(self, lt_id, version="1", size=3, **kwargs):
        name = self.name("asg")
        spec = {"LaunchTemplateId": lt_id}
        if version is not None:
            spec["Version"] = version
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=10,
            DesiredCapacity=size,
            AvailabilityZones=[f"{REGION}a"],
            LaunchTemplate=spec,
            **kwargs,
        )
        return name

    def desired(self, lt_id, version="2"):
        return {"LaunchTemplate": {"LaunchTemplateId": lt_id, "Version": version}}

    # -- reading state back

    def instances(self, group):
        """The group's instances as DescribeAutoScalingInstances shows them."""
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        ids = [i["InstanceId"] for i in g["Instances"]]
        if not ids:
            return []
        return self.asg.describe_auto_scaling_instances(InstanceIds=ids)["AutoScalingInstances"]

    def group_template(self, group):
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        return g.get("LaunchTemplate")

    def ec2_instances(self, ids):
        out = self.ec2.describe_instances(InstanceIds=list(ids))["Reservations"]
        return {i["InstanceId"]: i for r in out for i in r["Instances"]}

    def refresh(self, group, rid):
        out = self.asg.describe_instance_refreshes(AutoScalingGroupName=group, InstanceRefreshIds=[rid])
        (r,) = out["InstanceRefreshes"]
        return r

    def wait_for(self, what, probe, timeout=DEADLINE):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(0.05)
        self.fail(
            f"gave up after {timeout}s waiting for {what}; last seen: {last!r}\n"
            f"--- moto_server log ---\n{self.server.output()}"
        )

    def wait_status(self, group, rid, *statuses, seen=None):
        """Polls the refresh until its Status is one of statuses; every
        observation is appended to seen, and checked for consistency."""

        def probe():
            r = self.refresh(group, rid)
            if seen is not None:
                seen.append(r)
            return r if r["Status"] in statuses else None

        return self.wait_for(f"refresh {rid} to be {'/'.join(statuses)}", probe)

    def pending_wait(self, group):
        return [i for i in self.instances(group) if i["LifecycleState"] == "Pending:Wait"]

    def assert_error(self, code, call, *args, message=None, **kwargs):
        with self.assertRaises(ClientError) as caught:
            call(*args, **kwargs)
        err = caught.exception.response
        self.assertEqual(err["Error"]["Code"], code, err)
        self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 400, err)
        if message is not None:
            self.assertIn(message, err["Error"]["Message"])
        return err["Error"]["Message"]


def statuses_in_order(observed):
    """The distinct statuses seen, in the order first seen."""
    out = []
    for r in observed:
        if not out or out[-1] != r["Status"]:
            out.append(r["Status"])
    return out


class InstanceRefreshTest(AutoScalingCase):
    def test_refresh_replaces_every_instance_with_the_new_versions_ami(self):
        lt = self.template()
        group = self.group(lt, version="1", size=3)
        old = {i["InstanceId"] for i in self.instances(group)}
        self.assertEqual(len(old), 3)
        self.assertEqual(
            {r["ImageId"] for r in self.ec2_instances(old).values()}, {self.ami_v1}
        )

        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 0},
        )["InstanceRefreshId"]
        self.assertEqual(str(uuid.UUID(rid)), rid)

        seen = []
        final = self.wait_status(group, rid, "Successful", "Failed", "Cancelled", seen=seen)
        self.assertEqual(final["Status"], "Successful", final)
        self.assertEqual(statuses_in_order(seen)[-1], "Successful")
        self.assertTrue(set(statuses_in_order(seen)) <= {"Pending", "InProgress", "Successful"})
        for r in seen:
            # Progress is consistent with itself at every observation.
            done = 3 - r["InstancesToUpdate"]
            self.assertEqual(r["PercentageComplete"], 100 * done // 3, r)
            self.assertEqual(
                r["ProgressDetails"]["LivePoolProgress"],
                {"PercentageComplete": r["PercentageComplete"], "InstancesToUpdate": r["InstancesToUpdate"]},
            )
        self.assertEqual(final["PercentageComplete"], 100)
        self.assertEqual(final["InstancesToUpdate"], 0)
        self.assertGreaterEqual(final["EndTime"], final["StartTime"])
        self.assertEqual(final["Strategy"], "Rolling")
        self.assertEqual(final["DesiredConfiguration"]["LaunchTemplate"]["Version"], "2")
        self.assertEqual(final["DesiredConfiguration"]["LaunchTemplate"]["LaunchTemplateId"], lt)
        prefs = final["Preferences"]
        self.assertEqual(prefs["MinHealthyPercentage"], 90)
        self.assertEqual(prefs["MaxHealthyPercentage"], 100)
        self.assertEqual(prefs["InstanceWarmup"], 0)
        self.assertIs(prefs["SkipMatching"], False)
        self.assertIs(prefs["AutoRollback"], False)

        now = self.instances(group)
        new = {i["InstanceId"] for i in now}
        self.assertEqual(len(new), 3)
        self.assertFalse(new & old, "every old instance was replaced")
        for i in now:
            self.assertEqual(i["LifecycleState"], "InService")
            self.assertEqual(i["HealthStatus"], "HEALTHY")
            self.assertEqual(i["LaunchTemplate"]["LaunchTemplateId"], lt)
            self.assertEqual(i["LaunchTemplate"]["Version"], "2")
        in_ec2 = self.ec2_instances(new | old)
        for iid in new:
            self.assertEqual(in_ec2[iid]["ImageId"], self.ami_v2)
            self.assertEqual(in_ec2[iid]["State"]["Name"], "running")
        for iid in old:
            self.assertEqual(in_ec2[iid]["State"]["Name"], "terminated")
        # The group takes the desired configuration once the refresh succeeds.
        self.assertEqual(self.group_template(group)["Version"], "2")

    def test_the_group_keeps_its_template_until_success_and_launches_the_desired_one(self):
        lt = self.template()
        group = self.group(lt, version="1", size=2)
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 3600, "MinHealthyPercentage": 50},
        )["InstanceRefreshId"]
        self.wait_for("a replacement on version 2", lambda: [
            i for i in self.instances(group) if i["LaunchTemplate"]["Version"] == "2"
        ])
        r = self.wait_for("the refresh to wait for the warm-up", lambda: (
            lambda r: r if "warm up" in r.get("StatusReason", "") else None
        )(self.refresh(group, rid)))
        self.assertEqual(r["Status"], "InProgress")
        self.assertEqual((r["PercentageComplete"], r["InstancesToUpdate"]), (0, 2))
        self.assertEqual(self.group_template(group)["Version"], "1")
        # A scale-out during the refresh launches the desired configuration.
        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=3)
        versions = sorted(i["LaunchTemplate"]["Version"] for i in self.instances(group))
        self.assertEqual(versions, ["1", "2", "2"])
        self.asg.cancel_instance_refresh(AutoScalingGroupName=group, WaitForTransitioningInstances=False)
        self.wait_status(group, rid, "Cancelled")
        self.assertEqual(self.group_template(group)["Version"], "1")

    def test_skip_matching_leaves_matching_instances_alone(self):
        lt = self.template()
        group = self.group(lt, version="1", size=2)
        # One more instance, launched from version 2.
        self.asg.update_auto_scaling_group(
            AutoScalingGroupName=group, LaunchTemplate={"LaunchTemplateId": lt, "Version": "2"}
        )
        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=3)
        before = {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in self.instances(group)}
        self.assertEqual(sorted(before.values()), ["1", "1", "2"])
        matching = [iid for iid, v in before.items() if v == "2"]

        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 0, "SkipMatching": True},
        )["InstanceRefreshId"]
        first = self.refresh(group, rid)
        self.assertEqual(first["InstancesToUpdate"], 2)
        final = self.wait_status(group, rid, "Successful", "Failed")
        self.assertEqual(final["Status"], "Successful")
        self.assertIs(final["Preferences"]["SkipMatching"], True)
        after = {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in self.instances(group)}
        self.assertEqual(sorted(after.values()), ["2", "2", "2"])
        self.assertIn(matching[0], after, "the matching instance was not replaced")
        self.assertEqual(len(set(after) & set(before)), 1)

        # All match now: the next refresh succeeds at once, replacing nothing.
        rid2 = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "$Latest"),
            Preferences={"SkipMatching": True},
        )["InstanceRefreshId"]
        r = self.refresh(group, rid2)
        self.assertEqual(r["Status"], "Successful")
        self.assertEqual((r["PercentageComplete"], r["InstancesToUpdate"]), (100, 0))
        self.assertEqual(set(i["InstanceId"] for i in self.instances(group)), set(after))
        # Newest first.
        listed = self.asg.describe_instance_refreshes(AutoScalingGroupName=group)["InstanceRefreshes"]
        self.assertEqual([x["InstanceRefreshId"] for x in listed], [rid2, rid])

    def test_without_desired_configuration_instances_are_replaced_in_kind(self):
        lt = self.template()
        group = self.group(lt, version="2", size=2, DefaultInstanceWarmup=0)
        old = {i["InstanceId"] for i in self.instances(group)}
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group, Preferences={"MinHealthyPercentage": 0}
        )["InstanceRefreshId"]
        final = self.wait_status(group, rid, "Successful", "Failed")
        self.assertEqual(final["Status"], "Successful")
        self.assertNotIn("DesiredConfiguration", final)
        # DefaultInstanceWarmup is the default InstanceWarmup.
        self.assertEqual(final["Preferences"]["InstanceWarmup"], 0)
        now = self.instances(group)
        self.assertFalse({i["InstanceId"] for i in now} & old)
        self.assertEqual([i["LaunchTemplate"]["Version"] for i in now], ["2", "2"])
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        self.assertEqual(g["DefaultInstanceWarmup"], 0)

    def test_instance_warmup_defaults_to_the_health_check_grace_period(self):
        lt = self.template()
        plain = self.group(lt, size=0)
        graced = self.group(lt, size=0, HealthCheckGracePeriod=45)
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[plain])["AutoScalingGroups"][0]
        self.assertEqual(g["HealthCheckGracePeriod"], 0)
        for group, warmup in ((plain, 0), (graced, 45)):
            rid = self.asg.start_instance_refresh(AutoScalingGroupName=group)["InstanceRefreshId"]
            self.assertEqual(self.refresh(group, rid)["Preferences"]["InstanceWarmup"], warmup)

    def test_errors(self):
        lt = self.template()
        missing = self.name("missing")
        for call in (
            self.asg.start_instance_refresh,
            self.asg.describe_instance_refreshes,
            self.asg.cancel_instance_refresh,
            self.asg.rollback_instance_refresh,
        ):
            self.assert_error("ValidationError", call, AutoScalingGroupName=missing, message=missing)

        group = self.group(lt, version="1", size=1)
        self.assert_error(
            "ActiveInstanceRefreshNotFound",
            self.asg.cancel_instance_refresh,
            AutoScalingGroupName=group,
            message=f"No in progress or pending Instance Refresh found for Auto Scaling group {group}",
        )
        self.assert_error(
            "ActiveInstanceRefreshNotFound", self.asg.rollback_instance_refresh, AutoScalingGroupName=group
        )
        self.assert_error(
            "ValidationError",
            self.asg.start_instance_refresh,
            AutoScalingGroupName=group,
            Preferences={"AutoRollback": True},
            message="The AutoRollback parameter cannot be set to true when the DesiredConfiguration parameter is empty",
        )
        for version in ("$Latest", "$Default", None):
            other = self.group(lt, version=version, size=1)
            message = self.assert_error(
                "ValidationError",
                self.asg.start_instance_refresh,
                AutoScalingGroupName=other,
                DesiredConfiguration=self.desired(lt, "2"),
                Preferences={"AutoRollback": True},
            )
            self.assertIn("$Latest or $Default", message)
        self.assert_error(
            "ValidationError",
            self.asg.start_instance_refresh,
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "7"),
        )
        self.assert_error(
            "ValidationError",
            self.asg.start_instance_refresh,
            AutoScalingGroupName=group,
            DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateName": self.name("nope")}},
        )
        self.assert_error(
            "ValidationError",
            self.asg.start_instance_refresh,
            AutoScalingGroupName=group,
            Preferences={"MinHealthyPercentage": 50, "MaxHealthyPercentage": 160},
        )

        # One active refresh at a time.
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 3600},
        )["InstanceRefreshId"]
        self.assert_error(
            "InstanceRefreshInProgress",
            self.asg.start_instance_refresh,
            AutoScalingGroupName=group,
            message="An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
        )
        self.assert_error(
            "InvalidNextToken",
            self.asg.describe_instance_refreshes,
            AutoScalingGroupName=group,
            NextToken="bogus",
        )
        self.asg.cancel_instance_refresh(AutoScalingGroupName=group, WaitForTransitioningInstances=False)
        self.wait_status(group, rid, "Cancelled")

        # Rollbacks need a desired configuration and a numbered version on the group.
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group, Preferences={"InstanceWarmup": 3600}
        )["InstanceRefreshId"]
        self.assert_error(
            "IrreversibleInstanceRefresh",
            self.asg.rollback_instance_refresh,
            AutoScalingGroupName=group,
            message="no desired configuration",
        )
        self.asg.cancel_instance_refresh(AutoScalingGroupName=group, WaitForTransitioningInstances=False)
        self.wait_status(group, rid, "Cancelled")
        latest = self.group(lt, version="$Latest", size=1)
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=latest,
            DesiredConfiguration=self.desired(lt, "1"),
            Preferences={"InstanceWarmup": 3600},
        )["InstanceRefreshId"]
        self.assert_error(
            "IrreversibleInstanceRefresh",
            self.asg.rollback_instance_refresh,
            AutoScalingGroupName=latest,
            message="$Latest or $Default",
        )
        self.asg.cancel_instance_refresh(AutoScalingGroupName=latest, WaitForTransitioningInstances=False)
        self.wait_status(latest, rid, "Cancelled")

    def test_describe_pages_newest_first(self):
        lt = self.template()
        group = self.group(lt, size=0)
        ids = [self.asg.start_instance_refresh(AutoScalingGroupName=group)["InstanceRefreshId"] for _ in range(3)]
        page1 = self.asg.describe_instance_refreshes(AutoScalingGroupName=group, MaxRecords=2)
        self.assertEqual([r["InstanceRefreshId"] for r in page1["InstanceRefreshes"]], ids[::-1][:2])
        page2 = self.asg.describe_instance_refreshes(
            AutoScalingGroupName=group, MaxRecords=2, NextToken=page1["NextToken"]
        )
        self.assertEqual([r["InstanceRefreshId"] for r in page2["InstanceRefreshes"]], [ids[0]])
        self.assertNotIn("NextToken", page2)
        one = self.asg.describe_instance_refreshes(AutoScalingGroupName=group, InstanceRefreshIds=[ids[1]])
        self.assertEqual([r["InstanceRefreshId"] for r in one["InstanceRefreshes"]], [ids[1]])

    def test_cancel_waits_for_the_transitioning_batch(self):
        lt = self.template()
        group = self.group(lt, version="1", size=3)
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 4},
        )["InstanceRefreshId"]
        self.wait_for("the first replacement", lambda: [
            i for i in self.instances(group) if i["LaunchTemplate"]["Version"] == "2"
        ])
        self.assertEqual(
            self.asg.cancel_instance_refresh(AutoScalingGroupName=group)["InstanceRefreshId"], rid
        )
        self.assertEqual(self.refresh(group, rid)["Status"], "Cancelling")
        self.assert_error(
            "ActiveInstanceRefreshNotFound", self.asg.cancel_instance_refresh, AutoScalingGroupName=group
        )
        final = self.wait_status(group, rid, "Cancelled")
        # The batch in flight finished; nothing more was replaced.
        self.assertEqual((final["PercentageComplete"], final["InstancesToUpdate"]), (33, 2))
        self.assertGreaterEqual(final["EndTime"], final["StartTime"])
        versions = sorted(i["LaunchTemplate"]["Version"] for i in self.instances(group))
        self.assertEqual(versions, ["1", "1", "2"])
        self.assertEqual(self.group_template(group)["Version"], "1")

    def test_an_unhealthy_replacement_fails_the_refresh(self):
        lt = self.template()
        group = self.group(lt, version="1", size=3)
        old = {i["InstanceId"] for i in self.instances(group)}
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 3600},
        )["InstanceRefreshId"]
        (bad,) = self.wait_for("the first replacement", lambda: [
            i["InstanceId"] for i in self.instances(group) if i["LaunchTemplate"]["Version"] == "2"
        ])
        self.asg.set_instance_health(InstanceId=bad, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)
        final = self.wait_status(group, rid, "Failed", "Successful", "RollbackInProgress")
        self.assertEqual(final["Status"], "Failed")
        self.assertIn(bad, final["StatusReason"])
        self.assertIn("Unhealthy", final["StatusReason"])
        self.assertNotIn("RollbackDetails", final)
        self.assertEqual((final["PercentageComplete"], final["InstancesToUpdate"]), (0, 3))
        self.assertIn("EndTime", final)
        now = {i["InstanceId"]: i for i in self.instances(group)}
        self.assertEqual(now[bad]["HealthStatus"], "UNHEALTHY")
        self.assertEqual(len(set(now) & old), 2, "no further old instance was replaced")
        self.assertEqual(self.group_template(group)["Version"], "1")
        # The group is free for another refresh.
        self.asg.start_instance_refresh(AutoScalingGroupName=group, Preferences={"InstanceWarmup": 3600})

    def test_auto_rollback_after_an_unhealthy_replacement(self):
        lt = self.template()
        group = self.group(lt, version="1", size=3)
        old = {i["InstanceId"] for i in self.instances(group)}
        # A launch hook holds each new instance in Pending:Wait until the test lets it go.
        self.asg.put_lifecycle_hook(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
            HeartbeatTimeout=3600,
            DefaultResult="ABANDON",
        )
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 0, "AutoRollback": True},
        )["InstanceRefreshId"]
        self.assertIs(self.refresh(group, rid)["Preferences"]["AutoRollback"], True)
        (first,) = self.wait_for("the first replacement to wait", lambda: self.pending_wait(group))
        self.assertEqual(first["LaunchTemplate"]["Version"], "2")
        self.wait_for("the refresh to wait for the lifecycle action", lambda: (
            first["InstanceId"] in self.refresh(group, rid).get("StatusReason", "")
        ))
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="CONTINUE",
            InstanceId=first["InstanceId"],
        )
        (second,) = self.wait_for("the second replacement to wait", lambda: self.pending_wait(group))
        r = self.refresh(group, rid)
        self.assertEqual((r["PercentageComplete"], r["InstancesToUpdate"]), (33, 2))
        bad = second["InstanceId"]
        self.asg.set_instance_health(InstanceId=bad, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)

        r = self.refresh(group, rid)
        self.assertEqual(r["Status"], "RollbackInProgress")
        details = r["RollbackDetails"]
        self.assertIn(bad, details["RollbackReason"])
        self.assertEqual(r["StatusReason"], details["RollbackReason"])
        self.assertEqual(details["PercentageCompleteOnRollback"], 33)
        self.assertEqual(details["InstancesToUpdateOnRollback"], 2)
        self.assertGreaterEqual(details["RollbackStartTime"], r["StartTime"])

        # The rollback replaces both new instances, one at a time, from version 1.
        seen = []
        for _ in range(2):
            (back,) = self.wait_for("a rollback replacement to wait", lambda: [
                i for i in self.pending_wait(group) if i["LaunchTemplate"]["Version"] == "1"
            ])
            seen.append(self.refresh(group, rid))
            self.asg.complete_lifecycle_action(
                AutoScalingGroupName=group,
                LifecycleHookName="launch",
                LifecycleActionResult="CONTINUE",
                InstanceId=back["InstanceId"],
            )
        final = self.wait_status(group, rid, "RollbackSuccessful", "RollbackFailed", seen=seen)
        self.assertEqual(final["Status"], "RollbackSuccessful")
        self.assertEqual(final["PercentageComplete"], 0)
        self.assertEqual(final["InstancesToUpdate"], 2)
        self.assertIn("EndTime", final)
        pcts = [x["PercentageComplete"] for x in seen]
        self.assertEqual(pcts, sorted(pcts, reverse=True), "PercentageComplete falls during a rollback")

        now = self.instances(group)
        self.assertEqual(len(now), 3)
        self.assertEqual({i["LaunchTemplate"]["Version"] for i in now}, {"1"})
        self.assertEqual({i["LifecycleState"] for i in now}, {"InService"})
        self.assertEqual(self.group_template(group), {
            "LaunchTemplateId": lt, "LaunchTemplateName": self.group_template(group)["LaunchTemplateName"],
            "Version": "1",
        })
        ids = {i["InstanceId"] for i in now}
        in_ec2 = self.ec2_instances(ids | {first["InstanceId"], bad})
        self.assertEqual({in_ec2[i]["ImageId"] for i in ids}, {self.ami_v1})
        self.assertEqual(in_ec2[first["InstanceId"]]["State"]["Name"], "terminated")
        self.assertEqual(in_ec2[bad]["State"]["Name"], "terminated")
        self.assertEqual(len(ids & old), 1, "the old instance never replaced is still there")

    def test_manual_rollback(self):
        lt = self.template()
        group = self.group(lt, version="1", size=2)
        self.asg.put_lifecycle_hook(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
            HeartbeatTimeout=3600,
            DefaultResult="ABANDON",
        )
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 0},
        )["InstanceRefreshId"]
        (new,) = self.wait_for("a replacement to wait", lambda: self.pending_wait(group))
        self.assertEqual(self.asg.rollback_instance_refresh(AutoScalingGroupName=group)["InstanceRefreshId"], rid)
        r = self.refresh(group, rid)
        self.assertEqual(r["Status"], "RollbackInProgress")
        self.assertEqual(r["RollbackDetails"]["RollbackReason"], "Rollback started by user")
        self.assert_error(
            "ActiveInstanceRefreshNotFound", self.asg.rollback_instance_refresh, AutoScalingGroupName=group
        )
        back = self.wait_for("the rollback replacement", lambda: [
            i for i in self.pending_wait(group) if i["InstanceId"] != new["InstanceId"]
        ])[0]
        self.assertEqual(back["LaunchTemplate"]["Version"], "1")
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="CONTINUE",
            InstanceId=back["InstanceId"],
        )
        final = self.wait_status(group, rid, "RollbackSuccessful", "RollbackFailed")
        self.assertEqual(final["Status"], "RollbackSuccessful")
        self.assertEqual({i["LaunchTemplate"]["Version"] for i in self.instances(group)}, {"1"})

    def test_an_abandoned_replacement_fails_the_refresh(self):
        lt = self.template()
        group = self.group(lt, version="1", size=2)
        self.asg.put_lifecycle_hook(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
            HeartbeatTimeout=3600,
        )
        rid = self.asg.start_instance_refresh(
            AutoScalingGroupName=group,
            DesiredConfiguration=self.desired(lt, "2"),
            Preferences={"InstanceWarmup": 0},
        )["InstanceRefreshId"]
        (new,) = self.wait_for("a replacement to wait", lambda: self.pending_wait(group))
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="ABANDON",
            InstanceId=new["InstanceId"],
        )
        r = self.refresh(group, rid)
        self.assertEqual(r["Status"], "Failed")
        self.assertIn(new["InstanceId"], r["StatusReason"])
        self.assertIn("ABANDON", r["StatusReason"])
        state = self.ec2_instances([new["InstanceId"]])[new["InstanceId"]]["State"]["Name"]
        self.assertEqual(state, "terminated")
        # The group makes up its capacity from its own launch template.
        now = self.instances(group)
        self.assertEqual(len(now), 2)
        self.assertNotIn(new["InstanceId"], {i["InstanceId"] for i in now})
        self.assertEqual({i["LaunchTemplate"]["Version"] for i in now}, {"1"})


class LifecycleHookTest(AutoScalingCase):
    def hooked_group(self, **hook):
        lt = self.template()
        group = self.group(lt, version="1", size=1)
        self.asg.put_lifecycle_hook(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
            **hook,
        )
        return group

    def test_continue_and_abandon(self):
        group = self.hooked_group(HeartbeatTimeout=3600)
        (first,) = self.instances(group)
        self.assertEqual(first["LifecycleState"], "InService", "launched before the hook existed")

        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=2)
        (waiting,) = self.pending_wait(group)
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        self.assertEqual(len(g["Instances"]), 2, "a pending instance counts towards the capacity")
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="CONTINUE",
            InstanceId=waiting["InstanceId"],
        )
        states = {i["InstanceId"]: i["LifecycleState"] for i in self.instances(group)}
        self.assertEqual(states[waiting["InstanceId"]], "InService")
        self.assertEqual(len(states), 2)

        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=3)
        (doomed,) = self.pending_wait(group)
        self.asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="ABANDON",
            InstanceId=doomed["InstanceId"],
        )
        ec2_state = self.ec2_instances([doomed["InstanceId"]])[doomed["InstanceId"]]["State"]["Name"]
        self.assertEqual(ec2_state, "terminated")
        now = self.instances(group)
        self.assertNotIn(doomed["InstanceId"], {i["InstanceId"] for i in now})
        # The group launched another to keep its capacity; it waits in turn.
        self.assertEqual(len(now), 3)
        (again,) = self.pending_wait(group)
        self.assertNotEqual(again["InstanceId"], doomed["InstanceId"])

    def test_complete_lifecycle_action_errors(self):
        group = self.hooked_group(HeartbeatTimeout=3600)
        (in_service,) = self.instances(group)
        iid = in_service["InstanceId"]
        self.assert_error(
            "ValidationError",
            self.asg.complete_lifecycle_action,
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="CONTINUE",
            InstanceId=iid,
            message=f"No active Lifecycle Action found with instance ID {iid}",
        )
        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=2)
        (waiting,) = self.pending_wait(group)
        self.assert_error(
            "ValidationError",
            self.asg.complete_lifecycle_action,
            AutoScalingGroupName=group,
            LifecycleHookName="no-such-hook",
            LifecycleActionResult="CONTINUE",
            InstanceId=waiting["InstanceId"],
        )
        token = str(uuid.uuid4())
        self.assert_error(
            "ValidationError",
            self.asg.complete_lifecycle_action,
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="CONTINUE",
            LifecycleActionToken=token,
            message=f"No active Lifecycle Action found with token {token}",
        )
        self.assert_error(
            "ValidationError",
            self.asg.complete_lifecycle_action,
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleActionResult="MAYBE",
            InstanceId=waiting["InstanceId"],
        )
        self.assertEqual(self.pending_wait(group)[0]["InstanceId"], waiting["InstanceId"])

    def test_set_instance_health(self):
        lt = self.template()
        group = self.group(lt, size=1)
        (i,) = self.instances(group)
        self.assertEqual(i["HealthStatus"], "HEALTHY")
        self.asg.set_instance_health(InstanceId=i["InstanceId"], HealthStatus="Unhealthy", ShouldRespectGracePeriod=True)
        (i,) = self.instances(group)
        self.assertEqual(i["HealthStatus"], "UNHEALTHY")
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
        self.assertEqual(g["Instances"][0]["HealthStatus"], "Unhealthy")
        self.asg.set_instance_health(InstanceId=i["InstanceId"], HealthStatus="Healthy")
        self.assertEqual(self.instances(group)[0]["HealthStatus"], "HEALTHY")

        # Inside the group's grace period, a call that respects it changes nothing.
        graced = self.group(lt, size=1, HealthCheckGracePeriod=3600)
        (j,) = self.instances(graced)
        self.asg.set_instance_health(InstanceId=j["InstanceId"], HealthStatus="Unhealthy")
        self.assertEqual(self.instances(graced)[0]["HealthStatus"], "HEALTHY")
        self.asg.set_instance_health(InstanceId=j["InstanceId"], HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)
        self.assertEqual(self.instances(graced)[0]["HealthStatus"], "UNHEALTHY")

        self.assert_error(
            "ValidationError", self.asg.set_instance_health, InstanceId="i-0123456789abcdef0", HealthStatus="Unhealthy"
        )
        self.assert_error(
            "ValidationError", self.asg.set_instance_health, InstanceId=j["InstanceId"], HealthStatus="Sick"
        )


class HeartbeatTimeoutTest(AutoScalingCase):
    """Seconds of HeartbeatTimeout last a hundredth of a second here."""

    ENV = {"IMAGECTL_MOTO_REFRESH_STEP_SECS": "0.1", "IMAGECTL_MOTO_TIME_SCALE": "0.01"}

    def test_default_result_applies_when_the_heartbeat_times_out(self):
        lt = self.template()
        for result, expect in (("CONTINUE", "InService"), ("ABANDON", None)):
            group = self.group(lt, size=0)
            self.asg.put_lifecycle_hook(
                AutoScalingGroupName=group,
                LifecycleHookName="launch",
                LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
                HeartbeatTimeout=60,
                DefaultResult=result,
            )
            self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
            (waiting,) = self.pending_wait(group)
            iid = waiting["InstanceId"]
            if expect == "InService":
                self.wait_for("the instance to go in service", lambda: [
                    i for i in self.instances(group) if i["InstanceId"] == iid and i["LifecycleState"] == "InService"
                ])
            else:
                self.wait_for("the instance to be terminated", lambda: (
                    self.ec2_instances([iid])[iid]["State"]["Name"] == "terminated"
                    and iid not in {i["InstanceId"] for i in self.instances(group)}
                ))
                self.asg.delete_lifecycle_hook(AutoScalingGroupName=group, LifecycleHookName="launch")

    def test_a_heartbeat_restarts_the_timeout(self):
        lt = self.template()
        group = self.group(lt, size=0)
        self.asg.put_lifecycle_hook(
            AutoScalingGroupName=group,
            LifecycleHookName="launch",
            LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
            HeartbeatTimeout=100,  # 1 s here
            DefaultResult="CONTINUE",
        )
        self.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
        (waiting,) = self.pending_wait(group)
        started = time.monotonic()
        for _ in range(3):
            time.sleep(0.5)
            self.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=group, LifecycleHookName="launch", InstanceId=waiting["InstanceId"]
            )
        self.assertEqual(self.instances(group)[0]["LifecycleState"], "Pending:Wait")
        self.assertGreater(time.monotonic() - started, 1.0)
        self.wait_for("the instance to go in service", lambda: (
            self.instances(group)[0]["LifecycleState"] == "InService"
        ))


if __name__ == "__main__":
    unittest.main()

"""Tests of the AMI lifecycle calls tests/moto_server.py adds to moto:
deprecation (Enable/DisableImageDeprecation, `DeprecationTime` in
DescribeImages) and deregistration protection
(Enable/DisableImageDeregistrationProtection, `DeregistrationProtection` in
DescribeImages, DeregisterImage refused while it holds), driven with boto3
against the wrapper on a free loopback port.

Run from the repository root with the venv's Python:
    python -m unittest -v tests/test_moto_images.py
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

SERVER = Path(__file__).resolve().with_name("moto_server.py")
REGION = "eu-west-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """tests/moto_server.py on a free loopback port, in its own process."""

    def __init__(self):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMAGECTL_MOTO_"))}
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
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
                    self.log.seek(0)
                    raise RuntimeError(f"moto_server did not start:\n{self.log.read().decode(errors='replace')}")
                time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def client(self, service, region=REGION):
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}),
        )

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def utc(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=timezone.utc)


class ImageLifecycleTest(unittest.TestCase):
    """One server for the class; every test registers its own image."""

    @classmethod
    def setUpClass(cls):
        cls.server = MotoServer()
        cls.ec2 = cls.server.client("ec2")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def image(self):
        n = getattr(type(self), "_n", 0) + 1
        type(self)._n = n
        return self.ec2.register_image(
            Name=f"golden-{self.id().rsplit('.', 1)[-1][:40]}-{n}",
            RootDeviceName="/dev/xvda",
            Architecture="x86_64",
            VirtualizationType="hvm",
        )["ImageId"]

    def described(self, ami):
        """The image as DescribeImages shows it, asked both ways imagectl
        and others ask: by ID, and by filter among the account's images."""
        (by_id,) = self.ec2.describe_images(ImageIds=[ami])["Images"]
        (by_filter,) = self.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": "image-id", "Values": [ami]}]
        )["Images"]
        self.assertEqual(by_id, by_filter)
        return by_id

    def assert_error(self, code, call, **kwargs):
        with self.assertRaises(ClientError) as caught:
            call(**kwargs)
        self.assertEqual(caught.exception.response["Error"]["Code"], code, caught.exception.response)
        return caught.exception.response["Error"]["Message"]

    # -- deprecation

    def test_a_new_image_is_neither_deprecated_nor_protected(self):
        i = self.described(self.image())
        self.assertNotIn("DeprecationTime", i)
        self.assertEqual(i["DeregistrationProtection"], "disabled")

    def test_deprecation_is_set_to_the_nearest_minute_and_cancelled(self):
        ami = self.image()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        base = (now + timedelta(days=90)).replace(second=0)
        for at, want in [
            (base + timedelta(seconds=10), base),
            (base + timedelta(seconds=40), base + timedelta(minutes=1)),
            (base.replace(tzinfo=None), base),  # naive times are UTC
        ]:
            out = self.ec2.enable_image_deprecation(ImageId=ami, DeprecateAt=at)
            self.assertIs(out["Return"], True)
            got = self.described(ami)["DeprecationTime"]
            self.assertEqual(got, want.strftime("%Y-%m-%dT%H:%M:00.000Z"), at)
        self.assertIs(self.ec2.disable_image_deprecation(ImageId=ami)["Return"], True)
        self.assertNotIn("DeprecationTime", self.described(ami))
        # Cancelling what is not set is no error.
        self.assertIs(self.ec2.disable_image_deprecation(ImageId=ami)["Return"], True)

    def test_a_deprecation_time_in_the_past_or_too_far_ahead_is_refused(self):
        ami = self.image()
        now = datetime.now(timezone.utc)
        for at in [now - timedelta(minutes=5), now + timedelta(days=3653 + 2)]:
            self.assert_error("InvalidParameterValue", self.ec2.enable_image_deprecation, ImageId=ami, DeprecateAt=at)
            self.assertNotIn("DeprecationTime", self.described(ami))
        # Ten years less a day is fine.
        self.ec2.enable_image_deprecation(ImageId=ami, DeprecateAt=now + timedelta(days=3650))
        # A public image may be deprecated at most 2 years after its creation.
        public = self.image()
        self.ec2.modify_image_attribute(ImageId=public, LaunchPermission={"Add": [{"Group": "all"}]})
        self.assert_error(
            "InvalidParameterValue",
            self.ec2.enable_image_deprecation,
            ImageId=public,
            DeprecateAt=now + timedelta(days=800),
        )
        self.ec2.enable_image_deprecation(ImageId=public, DeprecateAt=now + timedelta(days=700))

    # -- deregistration protection

    def test_protection_without_cooldown_blocks_deregistration_until_disabled(self):
        ami = self.image()
        out = self.ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=False)
        self.assertEqual(out["Return"], "enabled-without-cooldown")
        self.assertEqual(self.described(ami)["DeregistrationProtection"], "enabled-without-cooldown")
        # WithCooldown left out is false.
        out = self.ec2.enable_image_deregistration_protection(ImageId=ami)
        self.assertEqual(out["Return"], "enabled-without-cooldown")
        message = self.assert_error("OperationNotPermitted", self.ec2.deregister_image, ImageId=ami)
        self.assertIn(ami, message)
        self.assertEqual(self.described(ami)["ImageId"], ami, "a refused deregistration leaves the image")
        out = self.ec2.disable_image_deregistration_protection(ImageId=ami)
        self.assertEqual(out["Return"], "disabled")
        self.assertEqual(self.described(ami)["DeregistrationProtection"], "disabled")
        self.ec2.deregister_image(ImageId=ami)
        self.assertEqual(self.ec2.describe_images(ImageIds=[ami])["Images"], [])

    def test_protection_with_cooldown_lasts_24_hours_after_it_is_disabled(self):
        ami = self.image()
        out = self.ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=True)
        self.assertEqual(out["Return"], "enabled-with-cooldown")
        self.assertEqual(self.described(ami)["DeregistrationProtection"], "enabled-with-cooldown")
        before = datetime.now(timezone.utc).replace(microsecond=0)
        out = self.ec2.disable_image_deregistration_protection(ImageId=ami)["Return"]
        state, _, until = out.partition(" ")
        self.assertEqual(state, "disabled-until", out)
        until = utc(until)
        self.assertGreaterEqual(until, before + timedelta(hours=24))
        self.assertLess(until, before + timedelta(hours=24, minutes=1))
        self.assertEqual(self.described(ami)["DeregistrationProtection"], out)
        self.assert_error("OperationNotPermitted", self.ec2.deregister_image, ImageId=ami)
        # Enabling and disabling again without a cooldown does not end it.
        self.ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=False)
        out = self.ec2.disable_image_deregistration_protection(ImageId=ami)["Return"]
        self.assertTrue(out.startswith("disabled-until "), out)
        self.assert_error("OperationNotPermitted", self.ec2.deregister_image, ImageId=ami)

    def test_protection_is_per_image(self):
        a, b = self.image(), self.image()
        self.ec2.enable_image_deregistration_protection(ImageId=a)
        self.assertEqual(self.described(b)["DeregistrationProtection"], "disabled")
        self.ec2.deregister_image(ImageId=b)

    # -- errors common to the four calls

    def test_unknown_malformed_and_deregistered_images(self):
        gone = self.image()
        self.ec2.deregister_image(ImageId=gone)
        at = datetime.now(timezone.utc) + timedelta(days=1)
        calls = [
            (self.ec2.enable_image_deprecation, {"DeprecateAt": at}),
            (self.ec2.disable_image_deprecation, {}),
            (self.ec2.enable_image_deregistration_protection, {"WithCooldown": False}),
            (self.ec2.disable_image_deregistration_protection, {}),
        ]
        for call, extra in calls:
            with self.subTest(call=call.__name__):
                message = self.assert_error("InvalidAMIID.NotFound", call, ImageId="ami-0123456789abcdef0", **extra)
                self.assertEqual(message, "The image id '[ami-0123456789abcdef0]' does not exist")
                self.assert_error("InvalidAMIID.Malformed", call, ImageId="image-1", **extra)
                self.assert_error("InvalidAMIID.Unavailable", call, ImageId=gone, **extra)

    def test_dry_run_changes_nothing(self):
        ami = self.image()
        at = datetime.now(timezone.utc) + timedelta(days=1)
        self.assert_error("DryRunOperation", self.ec2.enable_image_deprecation, ImageId=ami, DeprecateAt=at, DryRun=True)
        self.assert_error("DryRunOperation", self.ec2.enable_image_deregistration_protection, ImageId=ami, DryRun=True)
        i = self.described(ami)
        self.assertNotIn("DeprecationTime", i)
        self.assertEqual(i["DeregistrationProtection"], "disabled")


if __name__ == "__main__":
    unittest.main()

"""moto_server, with the gaps imagectl's tests need filled.

moto 5.2.5 ignores `Description` and `ImdsSupport` in ModifyImageAttribute,
which is how Packer 1.6.6 sets an AMI's description and how imagectl
requires IMDSv2 on it. Real EC2 applies both; so does this wrapper, so that
a test can read them back instead of skipping the check.

moto 5.2.5 has no image block public access (Get/Enable/Disable
ImageBlockPublicAccess): kept here per account and region, `unblocked`
until enabled, as in an account that never turned it on.

moto 5.2.5 has no AMI deprecation or deregistration protection
(Enable/DisableImageDeprecation, Enable/DisableImageDeregistrationProtection)
and DescribeImages shows neither. This wrapper keeps both on moto's own
images, as the EC2 API reference and user guide describe them:
`DeprecationTime` appears only while a deprecation time is set, rounded to
the nearest minute (a time in the past, or more than 10 years ahead, is
refused); `DeregistrationProtection` is `disabled`,
`enabled-without-cooldown` or `enabled-with-cooldown`, and for 24 hours
after protection with a cooldown is disabled, `disabled-until TIME`;
DeregisterImage refuses a protected image (OperationNotPermitted). An
unknown image is InvalidAMIID.NotFound, a deregistered one
InvalidAMIID.Unavailable, an ID that is not `ami-...`
InvalidAMIID.Malformed. test_moto_images.py has its tests.

moto 5.2.5 has no EC2 Auto Scaling instance refreshes (Start, Describe,
Cancel and RollbackInstanceRefresh), no CompleteLifecycleAction or
RecordLifecycleActionHeartbeat, and launches every instance straight into
InService whatever the group's lifecycle hooks. moto_autoscaling.py adds
them on moto's own groups and instances: a refresh really replaces the
group's instances in batches with EC2 instances of the desired launch
template version, waits for health and warm-up, fails on an Unhealthy or
abandoned replacement and rolls back; launches wait in Pending:Wait for
launch hooks. It also fixes where moto's Auto Scaling differs from AWS
(HEALTHY/UNHEALTHY in DescribeAutoScalingInstances, each instance's own
launch template version, ShouldRespectGracePeriod, HealthCheckGracePeriod
defaulting to 0, DefaultInstanceWarmup). Refreshes and lifecycle timeouts
advance when requests arrive, by wall-clock time: one refresh step per
IMAGECTL_MOTO_REFRESH_STEP_SECS seconds (default 1.0); warm-ups, bake times
and heartbeat timeouts last their seconds times IMAGECTL_MOTO_TIME_SCALE
(default 1.0). Its own docstring has the details.

Usage: python moto_server.py -H 127.0.0.1 -p PORT
"""

import sys
from datetime import datetime, timedelta, timezone

import moto_autoscaling
from moto.core.responses import ActionResult
from moto.ec2.exceptions import (
    InvalidAMIIdError,
    InvalidParameterValue,
    MalformedAMIIdError,
    MissingParameterError,
    OperationNotPermitted,
    UnvailableAMIIdError,
)
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.responses.amis import AmisResponse
from moto.server import main

_modify_image_attribute = AmisResponse.modify_image_attribute


def modify_image_attribute(self):
    ami_id = self._get_param("ImageId")
    description = self._get_param("Description.Value") or (self._get_param("Description") or {})
    imds = self._get_param("ImdsSupport.Value") or (self._get_param("ImdsSupport") or {})
    if isinstance(description, dict):
        description = description.get("Value")
    if isinstance(imds, dict):
        imds = imds.get("Value")
    if description is not None or imds:
        ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
        if description is not None:
            ami.description = description
        if imds:
            ami.imds = imds
    return _modify_image_attribute(self)


AmisResponse.modify_image_attribute = modify_image_attribute

_block_public_access = {}


def get_image_block_public_access_state(self):
    state = _block_public_access.get((self.current_account, self.region), "unblocked")
    return ActionResult({"ImageBlockPublicAccessState": state})


def enable_image_block_public_access(self):
    state = self._get_param("ImageBlockPublicAccessState")
    _block_public_access[(self.current_account, self.region)] = state
    return ActionResult({"ImageBlockPublicAccessState": state})


def disable_image_block_public_access(self):
    _block_public_access[(self.current_account, self.region)] = "unblocked"
    return ActionResult({"ImageBlockPublicAccessState": "unblocked"})


AmisResponse.get_image_block_public_access_state = get_image_block_public_access_state
AmisResponse.enable_image_block_public_access = enable_image_block_public_access
AmisResponse.disable_image_block_public_access = disable_image_block_public_access

# -- AMI deprecation and deregistration protection: state kept on moto's Ami
# objects, shown by DescribeImages through the two properties below (moto
# serializes an Image from the attributes named after its fields).

# How long protection enabled with a cooldown lasts after it is disabled.
COOLDOWN = timedelta(hours=24)


def _now():
    return datetime.now(timezone.utc)


def _iso(t):
    """As EC2 writes times in DescribeImages: `2026-05-10T13:17:00.000Z`."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _utc(value):
    """A request's timestamp (parsed, or as sent) as an aware UTC datetime."""
    if isinstance(value, datetime):
        t = value
    else:
        text = str(value).strip()
        try:
            t = datetime.fromtimestamp(float(text), timezone.utc)
        except ValueError:
            try:
                t = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidParameterValue(f"Invalid value '{text}' for DeprecateAt.")
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _round_to_minute(t):
    """EC2 rounds the seconds of a deprecation time to the nearest minute."""
    base = t.replace(second=0, microsecond=0)
    return base + timedelta(minutes=1) if t - base >= timedelta(seconds=30) else base


def _years_after(t, years):
    try:
        return t.replace(year=t.year + years)
    except ValueError:  # 29 February
        return t.replace(year=t.year + years, day=28)


def _deprecation_time(ami):
    at = ami.__dict__.get("_imagectl_deprecate_at")
    return _iso(at) if at else None


def _protection(ami):
    state = ami.__dict__.get("_imagectl_protection", "disabled")
    until = ami.__dict__.get("_imagectl_protected_until")
    if state == "disabled" and until is not None and _now() < until:
        return f"disabled-until {_iso(until)}"
    return state


Ami.deprecation_time = property(_deprecation_time)
Ami.deregistration_protection = property(_protection)


def _image(response):
    """The image of the request's ImageId, with EC2's errors for a missing,
    malformed, unknown or deregistered one."""
    ami_id = response._get_param("ImageId")
    if not ami_id:
        raise MissingParameterError("ImageId")
    if not ami_id.startswith("ami-"):
        raise MalformedAMIIdError([ami_id])
    backend = response.ec2_backend
    if ami_id in backend.amis:
        return backend.amis[ami_id]
    if ami_id in backend.deleted_amis:
        raise UnvailableAMIIdError(ami_id)
    raise InvalidAMIIdError(ami_id)


def enable_image_deprecation(self):
    ami = _image(self)
    raw = self._get_param("DeprecateAt")
    if raw in (None, ""):
        raise MissingParameterError("DeprecateAt")
    at = _utc(raw)
    self.error_on_dryrun()
    now = _now()
    if at < now:
        raise InvalidParameterValue("The deprecation time can't be in the past.")
    # 10 years from now; for a public image, 2 years from its creation.
    limit = _years_after(now, 10)
    if ami.is_public:
        created = ami.creation_date
        created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
        limit = min(limit, _years_after(created, 2))
    if at > limit:
        raise InvalidParameterValue(
            f"The deprecation time can't be later than {_iso(limit)}."
        )
    ami._imagectl_deprecate_at = _round_to_minute(at)
    return ActionResult({"Return": True})


def disable_image_deprecation(self):
    ami = _image(self)
    self.error_on_dryrun()
    ami._imagectl_deprecate_at = None
    return ActionResult({"Return": True})


def enable_image_deregistration_protection(self):
    ami = _image(self)
    cooldown = str(self._get_param("WithCooldown", False)).lower() == "true"
    self.error_on_dryrun()
    # A cooldown already running goes on: enabling and disabling again
    # does not shorten it.
    ami._imagectl_protection = "enabled-with-cooldown" if cooldown else "enabled-without-cooldown"
    return ActionResult({"Return": ami.deregistration_protection})


def disable_image_deregistration_protection(self):
    ami = _image(self)
    self.error_on_dryrun()
    if ami.__dict__.get("_imagectl_protection") == "enabled-with-cooldown":
        ami._imagectl_protected_until = _now() + COOLDOWN
    ami._imagectl_protection = "disabled"
    return ActionResult({"Return": ami.deregistration_protection})


AmisResponse.enable_image_deprecation = enable_image_deprecation
AmisResponse.disable_image_deprecation = disable_image_deprecation
AmisResponse.enable_image_deregistration_protection = enable_image_deregistration_protection
AmisResponse.disable_image_deregistration_protection = disable_image_deregistration_protection

_deregister_image = AmiBackend.deregister_image


def deregister_image(self, ami_id):
    ami = self.amis.get(ami_id)
    if ami is not None and ami.deregistration_protection != "disabled":
        # No error is documented for this; OperationNotPermitted is what EC2
        # answers for the like of it (terminating an instance with
        # termination protection).
        raise OperationNotPermitted(
            f"The image '{ami_id}' cannot be deregistered because deregistration "
            f"protection is enabled ({ami.deregistration_protection}). Disable it "
            "with DisableImageDeregistrationProtection and try again."
        )
    return _deregister_image(self, ami_id)


AmiBackend.deregister_image = deregister_image

moto_autoscaling.install()

if __name__ == "__main__":
    sys.exit(main())

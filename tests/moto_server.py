"""moto_server, with the gaps imagectl's tests need filled.

moto 5.2.5 ignores `Description` and `ImdsSupport` in ModifyImageAttribute,
which is how Packer 1.6.6 sets an AMI's description and how imagectl
requires IMDSv2 on it. Real EC2 applies both; so does this wrapper, so that
a test can read them back instead of skipping the check.

moto 5.2.5 has no image block public access (Get/Enable/Disable
ImageBlockPublicAccess): kept here per account and region, `unblocked`
until enabled, as in an account that never turned it on.

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

import moto_autoscaling
from moto.core.responses import ActionResult
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

moto_autoscaling.install()

if __name__ == "__main__":
    sys.exit(main())

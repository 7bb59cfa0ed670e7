"""moto_server, with the gaps imagectl's tests need filled.

moto 5.2.5 ignores `Description` and `ImdsSupport` in ModifyImageAttribute,
which is how Packer 1.6.6 sets an AMI's description and how imagectl
requires IMDSv2 on it. Real EC2 applies both; so does this wrapper, so that
a test can read them back instead of skipping the check.

Usage: python moto_server.py -H 127.0.0.1 -p PORT
"""

import sys

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

if __name__ == "__main__":
    sys.exit(main())

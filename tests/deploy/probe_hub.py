"""Call the hub's Register RPC with a given client certificate; print the outcome as JSON.

Copied to a node host by the deploy test and run with the deployed virtualenv's Python:
    python probe_hub.py HUB_ADDRESS TLS_NAME CA_CERT CERT KEY ENDPOINT
Exit 0 when the hub accepted the call, 3 when it refused it (e.g. revoked certificate).
"""

import json
import sys
from pathlib import Path

import grpc

from node.wire.gen.crossroads.v1 import hub_pb2, hub_pb2_grpc


def main(argv: list[str]) -> int:
    hub, tls_name, ca_cert, cert, key, endpoint = argv
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_cert).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", tls_name)]
    with grpc.secure_channel(hub, creds, options=options) as channel:
        stub = hub_pb2_grpc.HubStub(channel)
        try:
            reply = stub.Register(hub_pb2.RegisterRequest(endpoint=endpoint), timeout=10)
        except grpc.RpcError as exc:
            print(json.dumps({"ok": False, "code": exc.code().name, "details": exc.details()}))
            return 3
    print(json.dumps({"ok": True, "institution": reply.institution}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

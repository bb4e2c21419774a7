#!/usr/bin/env python3
"""A schema-only Terraform provider: enough for `terraform validate`.

Terraform starts a provider plugin as a child process and talks to it over
gRPC (plugin protocol 6). This one answers GetProviderSchema with a schema
rebuilt by extract.py, accepts every configuration in the Validate* calls
(so that what Terraform reports is what Terraform core itself checks against
the schema: unknown arguments and blocks, missing required arguments, block
counts, type mismatches, references to attributes that do not exist), lets
itself be configured (for `terraform console`), and refuses anything that
would need the real cloud API (plan, apply, read, import).

Two commands:

  provider.py build SCHEMA.json OUT.pb   turn extract.py's JSON into the
                                         serialized GetProviderSchema response
  provider.py serve OUT.pb               run as a plugin (Terraform runs this,
                                         through the wrapper that
                                         scripts/terraform-validate installs)

The handshake: Terraform sets TF_PLUGIN_MAGIC_COOKIE and reads one line on
the plugin's stdout, CORE-VERSION|APP-VERSION|NETWORK|ADDRESS|PROTOCOL|CERT.
Terraform runs its plugins with automatic mutual TLS: it passes its own
client certificate (PEM) in PLUGIN_CLIENT_CERT and always dials with TLS, so
the plugin makes a throwaway self-signed certificate for "localhost", serves
TLS with it and hands it to
Terraform as CERT (DER, base64 without padding), which Terraform then trusts
as the only root. The server listens on the loopback interface only and
does not authenticate the client (see serve()).
"""

import json
import os
import signal
import sys
import threading
from concurrent import futures

import base64
import datetime

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tf.gen import grpc_controller_pb2, grpc_controller_pb2_grpc
from tf.gen import tfplugin_pb2 as pb
from tf.gen import tfplugin_pb2_grpc as pb_grpc

MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
CORE_PROTOCOL_VERSION = 1
PLUGIN_PROTOCOL_VERSION = 6

NESTING = {
    "single": pb.Schema.NestedBlock.SINGLE,
    "list": pb.Schema.NestedBlock.LIST,
    "set": pb.Schema.NestedBlock.SET,
    "map": pb.Schema.NestedBlock.MAP,
    "group": pb.Schema.NestedBlock.GROUP,
}


# ---------------------------------------------------------------- build


def block_pb(block):
    out = pb.Schema.Block()
    for name, a in sorted(block.get("attributes", {}).items()):
        out.attributes.append(
            pb.Schema.Attribute(
                name=name,
                type=json.dumps(a["type"], separators=(",", ":")).encode(),
                required=a.get("required", False),
                optional=a.get("optional", False),
                computed=a.get("computed", False),
                sensitive=a.get("sensitive", False),
            )
        )
    for name, b in sorted(block.get("block_types", {}).items()):
        out.block_types.append(
            pb.Schema.NestedBlock(
                type_name=name,
                block=block_pb(b["block"]),
                nesting=NESTING[b["nesting_mode"]],
                min_items=b.get("min_items", 0),
                max_items=b.get("max_items", 0),
            )
        )
    return out


def schema_pb(schema):
    return pb.Schema(version=schema.get("version", 0), block=block_pb(schema["block"]))


def build(schema_json, out_path):
    with open(schema_json, encoding="utf-8") as f:
        schema = json.load(f)
    resp = pb.GetProviderSchema.Response(provider=schema_pb(schema["provider"]))
    for name, s in sorted(schema["resource_schemas"].items()):
        resp.resource_schemas[name].CopyFrom(schema_pb(s))
    for name, s in sorted(schema["data_source_schemas"].items()):
        resp.data_source_schemas[name].CopyFrom(schema_pb(s))
    resp.server_capabilities.plan_destroy = True
    data = resp.SerializeToString()
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out_path)
    print(f"{out_path}: {len(resp.resource_schemas)} resources, {len(resp.data_source_schemas)} data sources")


# ---------------------------------------------------------------- serve


def unsupported(what):
    return [
        pb.Diagnostic(
            severity=pb.Diagnostic.ERROR,
            summary="Schema-only provider",
            detail=f"This provider only serves its schema for `terraform validate`; it cannot {what}.",
        )
    ]


class Provider(pb_grpc.ProviderServicer):
    def __init__(self, schema_bytes, stop):
        self.schema = pb.GetProviderSchema.Response.FromString(schema_bytes)
        self.stop = stop

    def GetMetadata(self, request, context):
        resp = pb.GetMetadata.Response(server_capabilities=self.schema.server_capabilities)
        for name in self.schema.resource_schemas:
            resp.resources.append(pb.GetMetadata.ResourceMetadata(type_name=name))
        for name in self.schema.data_source_schemas:
            resp.data_sources.append(pb.GetMetadata.DataSourceMetadata(type_name=name))
        return resp

    def GetProviderSchema(self, request, context):
        return self.schema

    def GetFunctions(self, request, context):
        return pb.GetFunctions.Response()

    def ValidateProviderConfig(self, request, context):
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request, context):
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request, context):
        return pb.ValidateDataResourceConfig.Response()

    def UpgradeResourceState(self, request, context):
        return pb.UpgradeResourceState.Response(diagnostics=unsupported("upgrade state"))

    def ConfigureProvider(self, request, context):
        # Accepted: `terraform console` configures providers before it
        # evaluates expressions that need no remote data.
        return pb.ConfigureProvider.Response()

    def ReadResource(self, request, context):
        return pb.ReadResource.Response(diagnostics=unsupported("read resources"))

    def PlanResourceChange(self, request, context):
        return pb.PlanResourceChange.Response(diagnostics=unsupported("plan changes"))

    def ApplyResourceChange(self, request, context):
        return pb.ApplyResourceChange.Response(diagnostics=unsupported("apply changes"))

    def ImportResourceState(self, request, context):
        return pb.ImportResourceState.Response(diagnostics=unsupported("import resources"))

    def ReadDataSource(self, request, context):
        return pb.ReadDataSource.Response(diagnostics=unsupported("read data sources"))

    def StopProvider(self, request, context):
        return pb.StopProvider.Response()


class Controller(grpc_controller_pb2_grpc.GRPCControllerServicer):
    """go-plugin asks the plugin to exit through this service."""

    def __init__(self, stop):
        self.stop = stop

    def Shutdown(self, request, context):
        self.stop.set()
        return grpc_controller_pb2.Empty()


def health_handler():
    """grpc.health.v1.Health/Check answering SERVING, written out by hand: the
    response is field 1 (status) = 1 (SERVING), the bytes 08 01."""

    def check(request, context):
        return b"\x08\x01"

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=lambda b: b,
                response_serializer=lambda b: b,
            )
        },
    )


def server_certificate():
    """A fresh self-signed certificate for localhost: (key PEM, cert PEM, cert DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.DER)


def serve(schema_path):
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        sys.stderr.write("This is a Terraform provider plugin; Terraform starts it.\n")
        sys.exit(1)
    versions = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", str(PLUGIN_PROTOCOL_VERSION)).split(",")
    if str(PLUGIN_PROTOCOL_VERSION) not in versions:
        sys.stderr.write(f"plugin protocol {PLUGIN_PROTOCOL_VERSION} not offered ({versions})\n")
        sys.exit(1)
    with open(schema_path, "rb") as f:
        schema_bytes = f.read()

    stop = threading.Event()
    limit = 64 * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
    )
    pb_grpc.add_ProviderServicer_to_server(Provider(schema_bytes, stop), server)
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(Controller(stop), server)
    server.add_generic_rpc_handlers((health_handler(),))
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT")
    if client_cert:
        key_pem, cert_pem, cert_der = server_certificate()
        # Terraform's client certificate is on P-521, which the TLS library
        # behind grpcio does not accept for client authentication: asked for
        # a certificate, Terraform would send none. So the client is not
        # authenticated. What a local process could reach here is the
        # provider's public schema and calls that change nothing.
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], require_client_auth=False)
        port = server.add_secure_port("127.0.0.1:0", creds)
        cert_field = "|" + base64.b64encode(cert_der).decode().rstrip("=")
    else:
        port = server.add_insecure_port("127.0.0.1:0")
        cert_field = ""
    server.start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # Terraform forwards its own interrupts; the plugin waits for Shutdown.
    sys.stdout.write(f"{CORE_PROTOCOL_VERSION}|{PLUGIN_PROTOCOL_VERSION}|tcp|127.0.0.1:{port}|grpc{cert_field}\n")
    sys.stdout.flush()
    stop.wait()
    server.stop(grace=1)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "build":
        build(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Interop check of a Strata gRPC server with the stock grpcio client packages.

Usage: stock_client.py HOST:PORT SERVICE_NAME

Over an insecure channel and without any authorization metadata it:
  (a) calls grpc.health.v1.Health/Check for service "" and for SERVICE_NAME
      and requires SERVING for both;
  (b) lists services through server reflection (v1alpha ServerReflectionInfo,
      list_services) and requires SERVICE_NAME and grpc.health.v1.Health;
  (c) asks reflection for the file containing the symbol SERVICE_NAME and
      requires a non-empty file descriptor response that declares it.

On success prints one JSON line
  {"health": "SERVING", "services": [...], "descriptor_files": N}
and exits 0. On any failure prints a message to stderr and exits 1.
Every call has a 5 s deadline.
"""

import json
import sys

TIMEOUT = 5.0
HEALTH_SERVICE = "grpc.health.v1.Health"


class CheckFailed(Exception):
    pass


def rpc_error_text(err):
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else None
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {details}" if details else name


def check_health(channel, service_name):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", service_name):
        label = repr(service)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        except Exception as err:  # grpc.RpcError and friends
            raise CheckFailed(f"Health/Check for service {label} failed: {rpc_error_text(err)}")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise CheckFailed(f"Health/Check for service {label} returned {status}, want SERVING")
    return "SERVING"


def reflection_call(channel, what, **request_fields):
    """Sends one ServerReflectionRequest and returns the single response."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(**request_fields)
    try:
        responses = stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)
        first = None
        for resp in responses:
            if first is None:
                first = resp
    except Exception as err:
        raise CheckFailed(f"reflection {what} failed: {rpc_error_text(err)}")
    if first is None:
        raise CheckFailed(f"reflection {what}: the server sent no response")
    if first.HasField("error_response"):
        e = first.error_response
        raise CheckFailed(f"reflection {what}: error {e.error_code}: {e.error_message}")
    return first


def list_services(channel, service_name):
    resp = reflection_call(channel, "list_services", list_services="")
    if not resp.HasField("list_services_response"):
        raise CheckFailed(
            f"reflection list_services: unexpected response kind {resp.WhichOneof('message_response')}"
        )
    services = sorted(s.name for s in resp.list_services_response.service)
    for required in (service_name, HEALTH_SERVICE):
        if required not in services:
            raise CheckFailed(f"reflection list_services: {required!r} not in {services}")
    return services


def descriptor_files(channel, service_name):
    from google.protobuf import descriptor_pb2

    resp = reflection_call(
        channel, f"file_containing_symbol {service_name!r}", file_containing_symbol=service_name
    )
    if not resp.HasField("file_descriptor_response"):
        raise CheckFailed(
            "reflection file_containing_symbol: unexpected response kind "
            f"{resp.WhichOneof('message_response')}"
        )
    blobs = list(resp.file_descriptor_response.file_descriptor_proto)
    if not blobs or not any(blobs):
        raise CheckFailed(f"reflection file_containing_symbol {service_name!r}: empty file descriptor response")
    declared = False
    for blob in blobs:
        fd = descriptor_pb2.FileDescriptorProto()
        try:
            fd.ParseFromString(blob)
        except Exception as err:
            raise CheckFailed(f"reflection file_containing_symbol: undecodable FileDescriptorProto: {err}")
        prefix = f"{fd.package}." if fd.package else ""
        if any(prefix + svc.name == service_name for svc in fd.service):
            declared = True
    if not declared:
        raise CheckFailed(
            f"reflection file_containing_symbol {service_name!r}: no returned file declares that service"
        )
    return len(blobs)


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} HOST:PORT SERVICE_NAME", file=sys.stderr)
        return 1
    target, service_name = argv[1], argv[2]
    try:
        import grpc
    except ImportError as err:
        print(f"stock_client: cannot import grpc ({err}); run with target/pyenv/bin/python", file=sys.stderr)
        return 1

    channel = grpc.insecure_channel(target)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        except grpc.FutureTimeoutError:
            raise CheckFailed(f"could not connect to {target} within {TIMEOUT:g} s")
        health = check_health(channel, service_name)
        services = list_services(channel, service_name)
        n_files = descriptor_files(channel, service_name)
    except CheckFailed as err:
        print(f"stock_client: {target}: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # anything unexpected is still a clean failure
        print(f"stock_client: {target}: unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        channel.close()

    print(json.dumps({"health": health, "services": services, "descriptor_files": n_files}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

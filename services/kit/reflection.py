"""Server reflection, `grpc.reflection.v1` and `v1alpha`, answered from the API image so comments come along.

grpcio-reflection serves only v1alpha, from the generated modules' descriptors, which carry no source info
(so `grpcurl describe` showed no comment) and cannot find a method by its full name (so `grpcurl describe
parcours.directory.v1.DirectoryService.ListRegions` failed). This servicer answers both protocol versions
(their messages are the same on the wire; only the service's package differs) from the FileDescriptorSet
`make protos` writes next to the generated code (`parcours/image.binpb`, built by protoc with
`--include_imports --include_source_info`), and indexes every symbol a client may name: messages, fields,
enums and their values, services, methods and extensions.

Only the files that the served services need are reachable (a directory server does not describe billing's
API); health and reflection come from their own packages' descriptors.

The index is built by the first reflection request, not at start: parsing the image and serializing its files
costs a service process 3–6 MB of resident memory for good (issue 15), for requests only tools (grpcurl, an
integrator's IDE) make. A service missing from the generated code still fails the start.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import SERVICE_NAME as HEALTH
from grpc_reflection.v1alpha import reflection_pb2

log = logging.getLogger(__name__)

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
IMAGE_RESOURCE = ("parcours", "image.binpb")
_METHOD = "ServerReflectionInfo"


def load_image() -> list[descriptor_pb2.FileDescriptorProto]:
    """The API image written by `make protos` (every file of our API and its imports, with comments)."""
    package, name = IMAGE_RESOURCE
    try:
        data = resources.files(package).joinpath(name).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        log.warning(
            "%s/%s not found (run `make protos`): reflection serves descriptors without comments",
            package,
            name,
        )
        return []
    return list(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def _from_module(module: Any) -> descriptor_pb2.FileDescriptorProto:
    found = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(found)
    return found


def _reflection_v1() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's file under the v1 package (identical messages)."""
    found = _from_module(reflection_pb2)
    found.name = "grpc/reflection/v1/reflection.proto"
    found.package = "grpc.reflection.v1"
    found.ClearField("options")
    for message in found.message_type:
        for field in message.field:
            field.type_name = field.type_name.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
    for service in found.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    return found


def _own_descriptors() -> list[descriptor_pb2.FileDescriptorProto]:
    return [_from_module(health_pb2), _from_module(reflection_pb2), _reflection_v1()]


def _generated(service: str) -> bool:
    try:
        descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return False
    return True


def _generated_descriptors(services: Sequence[str]) -> list[descriptor_pb2.FileDescriptorProto]:
    """The services' files and their imports from the generated code: a fallback without comments."""
    found: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()
    pending = []
    for name in services:
        try:
            pending.append(descriptor_pool.Default().FindServiceByName(name).file)
        except KeyError:
            continue
    while pending:
        file = pending.pop()
        if file.name in seen:
            continue
        seen.add(file.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        found.append(proto)
        pending.extend(file.dependencies)
    return found


class DescriptorIndex:
    """Serialized files by name, and the file defining each symbol and extension."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto], services: Sequence[str]) -> None:
        available: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for given in files:
            available.setdefault(given.name, given)  # the first wins: the image's copy, with comments
        roots = [
            f.name
            for f in available.values()
            for s in f.service
            if f"{f.package}.{s.name}".lstrip(".") in services
        ]
        missing = set(services) - {
            f"{f.package}.{s.name}".lstrip(".") for f in available.values() for s in f.service
        }
        if missing:
            raise ValueError(f"no descriptor for the services {sorted(missing)}")
        self.services = tuple(sorted(services))
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        pending = list(roots)
        while pending:
            name = pending.pop()
            if name in self._files:
                continue
            if name not in available:
                raise ValueError(f"{name} is imported but no descriptor of it was found")
            self._files[name] = available[name]
            pending.extend(available[name].dependency)
        self._serialized = {name: f.SerializeToString() for name, f in self._files.items()}
        self._symbols: dict[str, str] = {}
        self._extensions: dict[tuple[str, int], str] = {}
        for name, file in self._files.items():
            self._index_file(name, file)

    def _index_file(self, name: str, file: descriptor_pb2.FileDescriptorProto) -> None:
        prefix = f"{file.package}." if file.package else ""
        for message in file.message_type:
            self._index_message(name, prefix, message)
        for enum in file.enum_type:
            self._index_enum(name, prefix, enum)
        for extension in file.extension:
            self._index_extension(name, prefix, extension)
        for service in file.service:
            full = prefix + service.name
            self._symbols[full] = name
            for method in service.method:
                self._symbols[f"{full}.{method.name}"] = name

    def _index_message(self, name: str, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        full = prefix + message.name
        self._symbols[full] = name
        for field in message.field:
            self._symbols[f"{full}.{field.name}"] = name
        for oneof in message.oneof_decl:
            self._symbols[f"{full}.{oneof.name}"] = name
        for nested in message.nested_type:
            self._index_message(name, f"{full}.", nested)
        for enum in message.enum_type:
            self._index_enum(name, f"{full}.", enum)
        for extension in message.extension:
            self._index_extension(name, f"{full}.", extension)

    def _index_enum(self, name: str, prefix: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self._symbols[prefix + enum.name] = name
        for value in enum.value:
            # Enum values are scoped like their enum's siblings (C++ scoping rules).
            self._symbols[prefix + value.name] = name

    def _index_extension(
        self, name: str, prefix: str, extension: descriptor_pb2.FieldDescriptorProto
    ) -> None:
        self._symbols[prefix + extension.name] = name
        self._extensions[(extension.extendee.lstrip("."), extension.number)] = name

    def file_with_dependencies(self, name: str) -> list[bytes] | None:
        """The file first, then every file it imports, transitively (what a client needs to build it)."""
        if name not in self._files:
            return None
        ordered: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current in ordered:
                continue
            ordered.append(current)
            pending.extend(self._files[current].dependency)
        return [self._serialized[n] for n in ordered]

    def file_of_symbol(self, symbol: str) -> str | None:
        return self._symbols.get(symbol.lstrip("."))

    def file_of_extension(self, containing_type: str, number: int) -> str | None:
        return self._extensions.get((containing_type.lstrip("."), number))

    def extension_numbers(self, containing_type: str) -> list[int] | None:
        wanted = containing_type.lstrip(".")
        if wanted not in self._symbols:
            return None
        return sorted(number for (extendee, number) in self._extensions if extendee == wanted)


class ReflectionServicer:
    """Answers ServerReflectionInfo for both protocol versions from one index, built by `build` when the
    first request needs it."""

    def __init__(self, build: Callable[[], DescriptorIndex]) -> None:
        self._build = build

    @functools.cached_property
    def index(self) -> DescriptorIndex:
        return self._build()

    def answer(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        response = reflection_pb2.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        index = self.index
        if kind == "list_services":
            response.list_services_response.service.extend(
                reflection_pb2.ServiceResponse(name=name) for name in index.services
            )
            return response
        if kind == "all_extension_numbers_of_type":
            numbers = index.extension_numbers(request.all_extension_numbers_of_type)
            if numbers is not None:
                response.all_extension_numbers_response.base_type_name = request.all_extension_numbers_of_type
                response.all_extension_numbers_response.extension_number.extend(numbers)
                return response
            return _not_found(response, f"type {request.all_extension_numbers_of_type}")
        if kind == "file_by_filename":
            name: str | None = request.file_by_filename
            what = f"file {request.file_by_filename}"
        elif kind == "file_containing_symbol":
            name = index.file_of_symbol(request.file_containing_symbol)
            what = f"symbol {request.file_containing_symbol}"
        elif kind == "file_containing_extension":
            wanted = request.file_containing_extension
            name = index.file_of_extension(wanted.containing_type, wanted.extension_number)
            what = f"extension {wanted.extension_number} of {wanted.containing_type}"
        else:
            response.error_response.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            response.error_response.error_message = "unknown reflection request"
            return response
        files = index.file_with_dependencies(name) if name else None
        if files is None:
            return _not_found(response, what)
        response.file_descriptor_response.file_descriptor_proto.extend(files)
        return response

    async def ServerReflectionInfo(
        self,
        requests: AsyncIterator[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)


def _not_found(
    response: reflection_pb2.ServerReflectionResponse, what: str
) -> reflection_pb2.ServerReflectionResponse:
    response.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
    response.error_response.error_message = f"{what} not found"
    return response


def enable_reflection(server: grpc.aio.Server, services: Sequence[str]) -> ReflectionServicer:
    """Serve reflection v1 and v1alpha for `services` (plus health and reflection) on `server`.

    Raises ValueError at once for a service the generated code does not define; the index is built by the
    first reflection request."""
    missing = [name for name in services if not _generated(name)]
    if missing:
        raise ValueError(f"no descriptor for the services {sorted(missing)}")

    def build() -> DescriptorIndex:
        files = [*load_image(), *_own_descriptors(), *_generated_descriptors(services)]
        return DescriptorIndex(files, [*services, HEALTH, *SERVICE_NAMES])

    servicer = ReflectionServicer(build)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {_METHOD: handler}) for name in SERVICE_NAMES]
    )
    return servicer

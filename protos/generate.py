"""Generate the Python code for every proto under protos/ into build/gen/python (one place, never edited).

Third-party schemas come from installed packages, never from copies in this repository:
- google/protobuf/*: grpcio-tools' bundled include folder;
- google/api, google/rpc, google/type: googleapis-common-protos ships the sources (and their Python modules);
- buf/validate/validate.proto: no package ships its source, but protovalidate embeds its serialized
  FileDescriptorProto; we extract it into a FileDescriptorSet that protoc reads with --descriptor_set_in,
  and generate the classic `buf.validate.validate_pb2` module from it so our generated code can import it.

Also writes the API image (a FileDescriptorSet with every import and source info, a buf image): into the
generated package as `parcours/image.binpb`, where the kit's server reflection reads it so that clients see
the comments, and as build/image.binpb for `buf lint`, `buf breaking` and `make sdk`.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import google.rpc
import grpc_tools
import protovalidate
from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
BUILD = ROOT / "build"
OUT = BUILD / "gen" / "python"
VALIDATE_SET = BUILD / "buf_validate.binpb"
IMAGE = BUILD / "image.binpb"


def _validate_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of buf/validate/validate.proto embedded in the protovalidate wheel."""
    source_path = Path(protovalidate.__file__).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    tree = ast.parse(source_path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "file_desc"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            fd = descriptor_pb2.FileDescriptorProto.FromString(node.args[0].value)
            if fd.name == "buf/validate/validate.proto":
                return fd
    raise SystemExit(f"no buf/validate/validate.proto descriptor found in {source_path}")


def _write_validate_descriptor_set() -> None:
    fds = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        fd = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fd)
        fds.file.append(fd)
    fds.file.append(_validate_file_descriptor())
    VALIDATE_SET.write_bytes(fds.SerializeToString())


def _our_protos() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def build_image(protos: Path, out: Path, extra: Sequence[str] = ()) -> None:
    """The image of the protos under `protos` (ours, or an older commit's for `buf breaking`), with every
    import and source info; `extra` adds files of the include path (e.g. google/rpc/error_details.proto)."""
    if not VALIDATE_SET.exists():
        _write_validate_descriptor_set()
    sources = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    out.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *sources,
        *extra,
        proto_path=protos,
    )


def _protoc(*args: str, proto_path: Path = PROTOS) -> None:
    googleapis = Path(
        next(iter(google.rpc.__path__))
    ).parent.parent  # site-packages holding google/rpc/*.proto
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_path}",
        f"--proto_path={googleapis}",
        f"--proto_path={wkt}",
        f"--descriptor_set_in={VALIDATE_SET}",
        *args,
    ]
    subprocess.run(cmd, check=True)


# What a client in another language needs besides our API: the error details our errors carry.
SDK_EXTRA = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def main() -> None:
    if sys.argv[1:2] == ["sdk"]:
        # `make sdk`: the self-contained FileDescriptorSet of the client bundle.
        out = Path(sys.argv[2])
        build_image(PROTOS, out, SDK_EXTRA)
        print(f"wrote {out}")
        return
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    _write_validate_descriptor_set()
    sources = _our_protos()
    plugin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    _protoc(
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out=quiet:{OUT}",
        f"--mypy_grpc_out=quiet:{OUT}",
        *sources,
    )
    # The classic module for buf.validate, generated from the extracted descriptor.
    _protoc(f"--python_out={OUT}", f"--mypy_out=quiet:{OUT}", "buf/validate/validate.proto")
    for folder in [p for p in OUT.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    build_image(PROTOS, IMAGE)
    shutil.copyfile(IMAGE, OUT / "parcours" / "image.binpb")
    print(f"generated {len(sources)} protos into {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

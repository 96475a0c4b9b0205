"""Generate the gRPC stubs of ``open_inference_grpc.proto`` into ``mlplatform/v2/grpc_gen/`` (build step).

Run by ``make venv`` (mk/grpc.mk) and by the model-serving image build, with grpcio-tools installed::

    python src/mlplatform/v2/proto/generate.py

The proto is mapped to ``mlplatform/v2/grpc_gen/open_inference_grpc.proto`` so that the generated
``_pb2_grpc`` module imports its messages as ``mlplatform.v2.grpc_gen.open_inference_grpc_pb2``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2]  # .../src
PACKAGE = "mlplatform/v2/grpc_gen"
PROTO = "open_inference_grpc.proto"


def main() -> int:
    """Write the stubs and the package's ``__init__.py``; returns protoc's exit status."""
    from grpc_tools import protoc

    out = SRC / PACKAGE
    out.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PACKAGE}={HERE}",
            f"--python_out={SRC}",
            f"--pyi_out={SRC}",
            f"--grpc_python_out={SRC}",
            str(HERE / PROTO),
        ]
    )
    if rc == 0:
        (out / "__init__.py").write_text(
            f'"""Generated from {PROTO} by mlplatform/v2/proto/generate.py at build time: do not edit."""\n'
        )
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Builds and installs the taskq Python client from this checkout, with no
package registry:

    pip install --no-build-isolation --no-deps clients/python
    (cd clients/python && python3 setup.py build)   # into clients/python/build/lib

The protobuf and gRPC stubs (taskq/v1/*_pb2*.py) are generated at build time
from ../../proto with protoc and grpc_python_plugin (Debian:
protobuf-compiler, protobuf-compiler-grpc), never committed and never
downloaded. $TASKQ_PROTO_DIR names another proto/ directory. Runtime needs:
grpcio and protobuf (Debian: python3-grpcio, python3-protobuf).
"""

import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["taskq/v1/taskq.proto", "taskq/v1/join_bundle.proto"]


def version() -> str:
    with open(os.path.join(HERE, "taskq", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def proto_dir() -> str:
    d = os.environ.get("TASKQ_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")
    d = os.path.abspath(d)
    if not os.path.exists(os.path.join(d, PROTOS[0])):
        raise SystemExit(f"taskq: {PROTOS[0]} not found under {d}: build from the taskq checkout "
                         "(clients/python next to proto/), or set TASKQ_PROTO_DIR to its proto/ "
                         "directory")
    return d


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise SystemExit(f"taskq: {name} is needed to generate the stubs: install {package} "
                         "(deploy/install-deps.sh does)")
    return path


class BuildWithStubs(build_py):
    """build_py, then the stubs generated into the built package's taskq/v1."""

    def run(self) -> None:
        super().run()
        out = os.path.abspath(self.build_lib)
        src = proto_dir()
        protoc = tool("protoc", "protobuf-compiler")
        plugin = tool("grpc_python_plugin", "protobuf-compiler-grpc")
        os.makedirs(os.path.join(out, "taskq", "v1"), exist_ok=True)
        cmd = [protoc, f"-I{src}", f"--python_out={out}", f"--grpc_python_out={out}",
               f"--plugin=protoc-gen-grpc_python={plugin}", *PROTOS]
        self.announce("generating the stubs: " + " ".join(cmd), level=2)
        subprocess.run(cmd, check=True, cwd=src)
        # A regular package once installed (in the build tree it is joined
        # by taskq/__init__.py's extend_path instead).
        open(os.path.join(out, "taskq", "v1", "__init__.py"), "a").close()


setup(
    name="taskq",
    version=version(),
    description="Python client of the taskq task-queue service: queue.Queue over the network, "
                "jobs with futures, Python workers",
    packages=["taskq"],
    python_requires=">=3.9",
    install_requires=["grpcio>=1.51", "protobuf>=3.21"],
    cmdclass={"build_py": BuildWithStubs},
    zip_safe=False,
)

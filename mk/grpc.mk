# V2 over gRPC (issue 19): the stubs of src/mlplatform/v2/proto/open_inference_grpc.proto are generated
# with grpcio-tools (pinned in requirements/lock.txt) into the git-ignored package
# src/mlplatform/v2/grpc_gen/, never committed. `venv` depends on them, so `make test`, `make run` and
# `make bench` have them; the model-serving images run the same generate.py before building the wheel.
# h2load (nghttp2-client) drives gRPC load in scripts/bench/bench_grpc.py, as wrk drives REST.
APT_PACKAGES += nghttp2-client

GRPC_PROTO := src/mlplatform/v2/proto/open_inference_grpc.proto
GRPC_STUBS := src/mlplatform/v2/grpc_gen/open_inference_grpc_pb2_grpc.py

.PHONY: grpc-stubs

$(GRPC_STUBS): $(GRPC_PROTO) src/mlplatform/v2/proto/generate.py $(VENV)/.installed
	$(PY) src/mlplatform/v2/proto/generate.py

grpc-stubs: $(GRPC_STUBS)

venv: $(GRPC_STUBS)

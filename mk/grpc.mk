# V2 over gRPC (issue 19): the stubs of src/mlplatform/v2/proto/open_inference_grpc.proto are generated
# with grpcio-tools (pinned in requirements/lock.txt) into the git-ignored package
# src/mlplatform/v2/grpc_gen/, never committed. `venv` depends on them, so `make test`, `make run` and
# `make bench` have them; the model-serving images run the same generate.py before building the wheel.
GRPC_PROTO := src/mlplatform/v2/proto/open_inference_grpc.proto
GRPC_STUBS := src/mlplatform/v2/grpc_gen/open_inference_grpc_pb2_grpc.py

.PHONY: grpc-stubs

$(GRPC_STUBS): $(GRPC_PROTO) src/mlplatform/v2/proto/generate.py $(VENV)/.installed
	$(PY) src/mlplatform/v2/proto/generate.py

grpc-stubs: $(GRPC_STUBS)

venv: $(GRPC_STUBS)

# The real V2 inference clients for the protocol tests (issue 19): NVIDIA's tritonclient[http,grpc] and
# the kserve SDK. They cannot share requirements/lock.txt (tritonclient pins protobuf<7 and
# ml-dtypes<=0.5.4), so they get their own virtual environment, pinned in requirements/clients.txt;
# tests call them through tests/clients/run_client.py (see tests/clients/harness.py).
CLIENTS_VENV := .venv-clients

$(eval $(call side_venv,clients,$(CLIENTS_VENV),requirements/clients.txt))

# the client-protocol tests run tritonclient and kserve from that environment
test test-unit: clients-venv

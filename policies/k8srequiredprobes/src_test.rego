package k8srequiredprobes

import rego.v1

params := {"probes": ["livenessProbe", "readinessProbe"], "probeTypes": ["httpGet", "tcpSocket", "exec", "grpc"]}

http_probe(path) := {"httpGet": {"path": path, "port": "http"}, "periodSeconds": 5}

container(probes) := object.union({"name": "server", "image": "ghcr.io/mlplatform/model-serving:1"}, probes)

rollout(c) := {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "model-serving"}, "spec": {"template": {"spec": {"containers": [c]}}}}

test_both_probes_allowed if {
	p := params
	c := container({"livenessProbe": http_probe("/v2/health/live"), "readinessProbe": http_probe("/v2/health/ready")})
	v := data.k8srequiredprobes.violation with input.review as {"object": rollout(c)} with input.parameters as p
	count(v) == 0
}

test_missing_readiness_denied if {
	p := params
	c := container({"livenessProbe": http_probe("/v2/health/live")})
	v := data.k8srequiredprobes.violation with input.review as {"object": rollout(c)} with input.parameters as p
	count(v) == 1
	some x in v
	x.details == {"container": "server", "missing_probe": "readinessProbe"}
	x.msg == "Rollout <model-serving> container <server> has no readinessProbe"
}

test_no_probes_denied_twice if {
	p := params
	v := data.k8srequiredprobes.violation with input.review as {"object": rollout(container({}))} with input.parameters as p
	count(v) == 2
}

test_probe_without_handler_denied if {
	p := params
	c := container({"livenessProbe": {"periodSeconds": 5}, "readinessProbe": http_probe("/ready")})
	v := data.k8srequiredprobes.violation with input.review as {"object": rollout(c)} with input.parameters as p
	count(v) == 1
	some x in v
	x.details.probe == "livenessProbe"
}

test_only_allowed_handler_types if {
	c := container({"livenessProbe": {"exec": {"command": ["true"]}}, "readinessProbe": http_probe("/ready")})
	v := data.k8srequiredprobes.violation with input.review as {"object": rollout(c)} with input.parameters as {"probeTypes": ["httpGet"]}
	count(v) == 1
}

test_init_containers_not_required if {
	p := params
	c := container({"livenessProbe": http_probe("/l"), "readinessProbe": http_probe("/r")})
	obj := {"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": {"spec": {"initContainers": [{"name": "init"}], "containers": [c]}}}}
	v := data.k8srequiredprobes.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 0
}

test_pod_and_deployment_checked if {
	p := params
	pod := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [container({})]}}
	dep := {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [container({})]}}}}
	v1 := data.k8srequiredprobes.violation with input.review as {"object": pod} with input.parameters as p
	v2 := data.k8srequiredprobes.violation with input.review as {"object": dep} with input.parameters as p
	count(v1) == 2
	count(v2) == 2
}

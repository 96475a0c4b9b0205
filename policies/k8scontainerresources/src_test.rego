package k8scontainerresources

import rego.v1

params := {"requests": ["cpu", "memory"], "limits": ["cpu", "memory"]}

full := {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}

container(n, resources) := {"name": n, "image": "ghcr.io/mlplatform/x:1", "resources": resources}

workload(kind, containers) := {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": containers}}}}

test_full_resources_allowed if {
	p := params
	obj := workload("Deployment", [container("app", full)])
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 0
}

test_no_resources_denied_four_times if {
	p := params
	obj := workload("StatefulSet", [{"name": "app"}])
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 4
}

test_missing_memory_limit_named if {
	p := params
	obj := workload("Rollout", [container("app", {"requests": full.requests, "limits": {"cpu": "1"}})])
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 1
	some x in v
	x.details == {"container": "app", "field": "limits", "resource": "memory"}
	contains(x.msg, "has no memory limit")
}

test_init_container_checked if {
	p := params
	obj := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {
		"containers": [container("app", full)],
		"initContainers": [{"name": "init"}],
	}}
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 4
	every x in v {
		x.details.container == "init"
	}
}

test_cronjob_checked if {
	p := params
	obj := {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "job", "resources": {"limits": full.limits}}]}}}}}}
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 2
}

test_defaults_without_parameters if {
	obj := workload("Job", [container("app", {"requests": full.requests})])
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 2
}

test_only_memory_limit_required if {
	obj := workload("Deployment", [container("app", {"requests": full.requests, "limits": {"memory": "1Gi"}})])
	v := data.k8scontainerresources.violation with input.review as {"object": obj} with input.parameters as {"requests": ["cpu", "memory"], "limits": ["memory"]}
	count(v) == 0
}

test_non_workload_ignored if {
	p := params
	v := data.k8scontainerresources.violation with input.review as {"object": {"kind": "Service", "metadata": {"name": "s"}, "spec": {}}} with input.parameters as p
	count(v) == 0
}

package k8sgpunodepool

import rego.v1

params := {"resourceName": "nvidia.com/gpu", "tolerationKey": "nvidia.com/gpu", "nodeSelectorKey": "mlplatform.io/node-pool", "nodeSelectorValue": "gpu"}

gpu_container := {"name": "server", "image": "i", "resources": {"limits": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1}}}

toleration := {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

deployment(pod) := {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": pod}}}

missing(v) := {x.details.missing | some x in v}

test_gpu_with_toleration_and_selector_allowed if {
	p := params
	obj := deployment({"containers": [gpu_container], "tolerations": [toleration], "nodeSelector": {"mlplatform.io/node-pool": "gpu"}})
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 0
}

test_gpu_without_toleration_denied if {
	p := params
	obj := deployment({"containers": [gpu_container], "nodeSelector": {"mlplatform.io/node-pool": "gpu"}})
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	missing(v) == {"toleration"}
	some x in v
	x.details.containers == ["server"]
}

test_gpu_without_selector_denied if {
	p := params
	obj := deployment({"containers": [gpu_container], "tolerations": [toleration]})
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	missing(v) == {"node selector"}
}

test_gpu_with_neither_denied_twice if {
	p := params
	v := data.k8sgpunodepool.violation with input.review as {"object": deployment({"containers": [gpu_container]})} with input.parameters as p
	count(v) == 2
}

test_wrong_pool_value_denied if {
	p := params
	obj := deployment({"containers": [gpu_container], "tolerations": [toleration], "nodeSelector": {"mlplatform.io/node-pool": "cpu"}})
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	missing(v) == {"node selector"}
}

test_toleration_with_other_effect_denied if {
	p := params
	t := {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}
	obj := deployment({"containers": [gpu_container], "tolerations": [t], "nodeSelector": {"mlplatform.io/node-pool": "gpu"}})
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	missing(v) == {"toleration"}
}

test_required_node_affinity_accepted if {
	p := params
	aff := {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "mlplatform.io/node-pool", "operator": "In", "values": ["gpu"]}]}]}}}
	obj := deployment({"containers": [gpu_container], "tolerations": [toleration], "affinity": aff})
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 0
}

test_gpu_request_only_is_detected if {
	p := params
	c := {"name": "job", "image": "i", "resources": {"requests": {"nvidia.com/gpu": 1}}}
	obj := {"kind": "CronJob", "metadata": {"name": "train"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [c]}}}}}}
	v := data.k8sgpunodepool.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 2
}

test_cpu_only_pod_ignored if {
	p := params
	c := {"name": "app", "image": "i", "resources": {"limits": {"cpu": "1"}}}
	v := data.k8sgpunodepool.violation with input.review as {"object": {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [c]}}} with input.parameters as p
	count(v) == 0
}

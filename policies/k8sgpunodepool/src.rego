package k8sgpunodepool

import rego.v1

# A pod that requests the GPU resource must tolerate the GPU node pool's taint and select that
# pool (nodeSelector, or a required node affinity term on the same label in every term).

violation contains {"msg": msg, "details": {"containers": gpu_containers, "missing": "toleration", "toleration_key": toleration_key}} if {
	count(gpu_containers) > 0
	not tolerates_pool
	msg := sprintf("%v <%v> requests %v but has no toleration for the GPU node pool taint <%v> (effect NoSchedule)", [kind, name, resource_name, toleration_key])
}

violation contains {"msg": msg, "details": {"containers": gpu_containers, "missing": "node selector", "node_selector": {selector_key: selector_value}}} if {
	count(gpu_containers) > 0
	not selects_pool
	msg := sprintf("%v <%v> requests %v but does not select the GPU node pool (nodeSelector %v: %v)", [kind, name, resource_name, selector_key, selector_value])
}

resource_name := object.get(input.parameters, "resourceName", "nvidia.com/gpu")

toleration_key := object.get(input.parameters, "tolerationKey", "nvidia.com/gpu")

selector_key := object.get(input.parameters, "nodeSelectorKey", "mlplatform.io/node-pool")

selector_value := object.get(input.parameters, "nodeSelectorValue", "gpu")

gpu_containers := sort([c.name |
	some c in containers
	requests_gpu(c)
])

requests_gpu(c) if c.resources.limits[resource_name]

requests_gpu(c) if c.resources.requests[resource_name]

tolerates_pool if {
	some t in pod_spec.tolerations
	t.key == toleration_key
	object.get(t, "effect", "") in {"", "NoSchedule"}
}

selects_pool if pod_spec.nodeSelector[selector_key] == selector_value

selects_pool if {
	terms := pod_spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms
	count(terms) > 0
	every term in terms {
		term_selects_pool(term)
	}
}

term_selects_pool(term) if {
	some expr in term.matchExpressions
	expr.key == selector_key
	expr.operator == "In"
	expr.values == [selector_value]
}

kind := input.review.object.kind

name := object.get(input.review.object.metadata, "name", "")

containers contains c if {
	some c in pod_spec.containers
}

containers contains c if {
	some c in pod_spec.initContainers
}

pod_spec := input.review.object.spec if {
	input.review.object.kind == "Pod"
} else := input.review.object.spec.jobTemplate.spec.template.spec if {
	input.review.object.kind == "CronJob"
} else := input.review.object.spec.template.spec if {
	input.review.object.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"}
}

package k8scontainerresources

import rego.v1

# Every container and init container of a pod template must set the CPU/memory requests and
# limits named in the parameters.

violation contains {"msg": msg, "details": {"container": c.name, "field": "requests", "resource": r}} if {
	some c in containers
	some r in object.get(input.parameters, "requests", ["cpu", "memory"])
	not has_resource(c, "requests", r)
	msg := sprintf("%v <%v> container <%v> has no %v request: set resources.requests.%v", [kind, name, c.name, r, r])
}

violation contains {"msg": msg, "details": {"container": c.name, "field": "limits", "resource": r}} if {
	some c in containers
	some r in object.get(input.parameters, "limits", ["cpu", "memory"])
	not has_resource(c, "limits", r)
	msg := sprintf("%v <%v> container <%v> has no %v limit: set resources.limits.%v", [kind, name, c.name, r, r])
}

has_resource(c, field, r) if {
	value := c.resources[field][r]
	value != ""
	value != null
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

package k8srequiredprobes

import rego.v1

# Every (non-init) container of a model workload must define the probes named in the parameters,
# each with one of the allowed probe handlers. Select model workloads with the constraint's match.

violation contains {"msg": msg, "details": {"container": c.name, "missing_probe": probe}} if {
	some c in pod_spec.containers
	some probe in required_probes
	not c[probe]
	msg := sprintf("%v <%v> container <%v> has no %v", [kind, name, c.name, probe])
}

violation contains {"msg": msg, "details": {"container": c.name, "probe": probe, "allowed_types": probe_types}} if {
	some c in pod_spec.containers
	some probe in required_probes
	c[probe]
	not has_handler(c[probe])
	msg := sprintf("%v <%v> container <%v> %v has none of the handlers %v", [kind, name, c.name, probe, probe_types])
}

required_probes := object.get(input.parameters, "probes", ["livenessProbe", "readinessProbe"])

probe_types := object.get(input.parameters, "probeTypes", ["httpGet", "tcpSocket", "exec", "grpc"])

has_handler(probe) if {
	some t in probe_types
	probe[t]
}

kind := input.review.object.kind

name := object.get(input.review.object.metadata, "name", "")

pod_spec := input.review.object.spec if {
	input.review.object.kind == "Pod"
} else := input.review.object.spec.jobTemplate.spec.template.spec if {
	input.review.object.kind == "CronJob"
} else := input.review.object.spec.template.spec if {
	input.review.object.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"}
}

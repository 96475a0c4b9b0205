package k8spodsecurity

import rego.v1

# Pods must not run privileged containers, share the host's network/PID/IPC namespaces, mount
# hostPath volumes or allow privilege escalation, and must run as a non-root user.

violation contains {"msg": msg, "details": {"container": c.name, "check": "privileged"}} if {
	some c in containers
	not exempt(c)
	c.securityContext.privileged == true
	msg := sprintf("%v <%v> container <%v> is privileged", [kind, name, c.name])
}

violation contains {"msg": msg, "details": {"container": c.name, "check": "allowPrivilegeEscalation"}} if {
	some c in containers
	not exempt(c)
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("%v <%v> container <%v> must set securityContext.allowPrivilegeEscalation: false", [kind, name, c.name])
}

violation contains {"msg": msg, "details": {"container": c.name, "check": "runAsNonRoot"}} if {
	some c in containers
	not exempt(c)
	not runs_as_non_root(c)
	msg := sprintf("%v <%v> container <%v> must run as non-root (securityContext.runAsNonRoot: true, runAsUser != 0)", [kind, name, c.name])
}

violation contains {"msg": msg, "details": {"check": field}} if {
	some field in {"hostNetwork", "hostPID", "hostIPC"}
	pod_spec[field] == true
	msg := sprintf("%v <%v> shares the host namespace: %v is true", [kind, name, field])
}

violation contains {"msg": msg, "details": {"volume": vol.name, "check": "hostPath"}} if {
	some vol in pod_spec.volumes
	vol.hostPath
	msg := sprintf("%v <%v> mounts hostPath volume <%v> (%v)", [kind, name, vol.name, vol.hostPath.path])
}

runs_as_non_root(c) if {
	c.securityContext.runAsNonRoot == true
	not runs_as_uid_zero(c)
}

runs_as_non_root(c) if {
	not c.securityContext.runAsNonRoot == false
	pod_spec.securityContext.runAsNonRoot == true
	not runs_as_uid_zero(c)
}

runs_as_uid_zero(c) if c.securityContext.runAsUser == 0

runs_as_uid_zero(c) if {
	not c.securityContext.runAsUser
	pod_spec.securityContext.runAsUser == 0
}

exempt(c) if {
	some prefix in object.get(input.parameters, "exemptImages", [])
	startswith(c.image, prefix)
}

kind := input.review.object.kind

name := object.get(input.review.object.metadata, "name", "")

containers contains c if {
	some c in pod_spec.containers
}

containers contains c if {
	some c in pod_spec.initContainers
}

containers contains c if {
	some c in pod_spec.ephemeralContainers
}

pod_spec := input.review.object.spec if {
	input.review.object.kind == "Pod"
} else := input.review.object.spec.jobTemplate.spec.template.spec if {
	input.review.object.kind == "CronJob"
} else := input.review.object.spec.template.spec if {
	input.review.object.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"}
}

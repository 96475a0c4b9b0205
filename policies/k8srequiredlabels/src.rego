package k8srequiredlabels

import rego.v1

# Objects must carry the app.kubernetes.io/* labels named in the parameters (on the object and,
# with checkPodTemplate, on the pod template of workloads), with values matching allowedRegex.

violation contains {"msg": msg, "details": {"missing_labels": missing, "where": where}} if {
	some where, labels in label_sets
	provided := {key | labels[key]}
	required := {l.key | some l in input.parameters.labels}
	missing := sort([l | some l in required - provided])
	count(missing) > 0
	msg := sprintf("%v <%v> is missing required labels on %v: %v", [kind, name, where, missing])
}

violation contains {"msg": msg, "details": {"label": l.key, "value": value, "allowed_regex": l.allowedRegex, "where": where}} if {
	some where, labels in label_sets
	some l in input.parameters.labels
	value := labels[l.key]
	l.allowedRegex != ""
	not regex.match(l.allowedRegex, value)
	msg := sprintf("%v <%v> label %v=%v on %v does not match %v", [kind, name, l.key, value, where, l.allowedRegex])
}

kind := input.review.object.kind

name := object.get(input.review.object.metadata, "name", "")

label_sets["metadata"] := object.get(input.review.object.metadata, "labels", {})

label_sets["pod template"] := object.get(template_metadata, "labels", {}) if {
	object.get(input.parameters, "checkPodTemplate", false)
	template_metadata
}

template_metadata := input.review.object.spec.jobTemplate.spec.template.metadata if {
	input.review.object.kind == "CronJob"
} else := input.review.object.spec.template.metadata if {
	input.review.object.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"}
}

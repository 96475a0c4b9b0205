package k8srequiredlabels

import rego.v1

params := {
	"labels": [
		{"key": "app.kubernetes.io/name", "allowedRegex": ""},
		{"key": "app.kubernetes.io/part-of", "allowedRegex": "^mlplatform$"},
	],
	"checkPodTemplate": true,
}

full := {"app.kubernetes.io/name": "model-serving", "app.kubernetes.io/part-of": "mlplatform"}

deployment(labels, template_labels) := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": "model-serving", "labels": labels},
	"spec": {"template": {"metadata": {"labels": template_labels}, "spec": {"containers": []}}},
}

test_all_labels_allowed if {
	p := params
	v := data.k8srequiredlabels.violation with input.review as {"object": deployment(full, full)} with input.parameters as p
	count(v) == 0
}

test_missing_label_denied if {
	p := params
	v := data.k8srequiredlabels.violation with input.review as {"object": deployment({"app.kubernetes.io/name": "x"}, full)} with input.parameters as p
	count(v) == 1
	some x in v
	x.details.missing_labels == ["app.kubernetes.io/part-of"]
	x.details.where == "metadata"
}

test_no_labels_at_all_denied if {
	p := params
	obj := {"kind": "Service", "metadata": {"name": "s"}}
	v := data.k8srequiredlabels.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 1
}

test_wrong_value_denied if {
	p := params
	labels := {"app.kubernetes.io/name": "x", "app.kubernetes.io/part-of": "other"}
	v := data.k8srequiredlabels.violation with input.review as {"object": deployment(labels, full)} with input.parameters as p
	count(v) == 1
	some x in v
	x.details.label == "app.kubernetes.io/part-of"
}

test_pod_template_checked if {
	p := params
	v := data.k8srequiredlabels.violation with input.review as {"object": deployment(full, {})} with input.parameters as p
	count(v) == 1
	some x in v
	x.details.where == "pod template"
}

test_pod_template_ignored_when_off if {
	p := params
	v := data.k8srequiredlabels.violation with input.review as {"object": deployment(full, {})}
		with input.parameters as {"labels": p.labels}
	count(v) == 0
}

test_cronjob_template_checked if {
	p := params
	obj := {
		"kind": "CronJob",
		"metadata": {"name": "c", "labels": full},
		"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {}}, "spec": {}}}}},
	}
	v := data.k8srequiredlabels.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 1
}

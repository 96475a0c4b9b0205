package k8spodsecurity

import rego.v1

safe_sc := {"allowPrivilegeEscalation": false, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}

container(sc) := {"name": "app", "image": "ghcr.io/mlplatform/x:1", "securityContext": sc}

deployment(pod) := {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": pod}}}

checks(v) := {x.details.check | some x in v}

test_hardened_pod_allowed if {
	obj := deployment({"containers": [container({"allowPrivilegeEscalation": false, "runAsNonRoot": true})]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 0
}

test_pod_level_run_as_non_root_allowed if {
	obj := deployment({"securityContext": {"runAsNonRoot": true, "runAsUser": 10001}, "containers": [container({"allowPrivilegeEscalation": false})]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 0
}

test_privileged_denied if {
	sc := object.union(safe_sc, {"privileged": true})
	obj := deployment({"containers": [container(sc)]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"privileged"}
	some x in v
	x.msg == "Deployment <d> container <app> is privileged"
}

test_privilege_escalation_must_be_explicitly_off if {
	obj := deployment({"containers": [container({"runAsNonRoot": true})]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"allowPrivilegeEscalation"}
}

test_root_denied if {
	obj := deployment({"containers": [container({"allowPrivilegeEscalation": false})]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"runAsNonRoot"}
}

test_uid_zero_denied_even_with_run_as_non_root if {
	obj := deployment({"containers": [container({"allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 0})]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"runAsNonRoot"}
}

test_container_overrides_pod_non_root if {
	obj := deployment({"securityContext": {"runAsNonRoot": true}, "containers": [container({"allowPrivilegeEscalation": false, "runAsNonRoot": false})]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"runAsNonRoot"}
}

test_host_namespaces_denied if {
	obj := deployment({"hostNetwork": true, "hostPID": true, "hostIPC": true, "containers": [container(safe_sc)]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"hostNetwork", "hostPID", "hostIPC"}
}

test_host_path_denied if {
	obj := deployment({"volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}, {"name": "tmp", "emptyDir": {}}], "containers": [container(safe_sc)]})
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 1
	some x in v
	x.details.volume == "docker"
}

test_init_container_of_cronjob_checked if {
	obj := {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
		"initContainers": [{"name": "init", "image": "i", "securityContext": {"privileged": true}}],
		"containers": [container(safe_sc)],
	}}}}}}
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {}
	checks(v) == {"privileged", "allowPrivilegeEscalation", "runAsNonRoot"}
}

test_exempt_image_skipped if {
	obj := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "cni", "image": "registry.k8s.io/cni:1", "securityContext": {"privileged": true}}]}}
	v := data.k8spodsecurity.violation with input.review as {"object": obj} with input.parameters as {"exemptImages": ["registry.k8s.io/cni"]}
	count(v) == 0
}

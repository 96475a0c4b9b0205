package k8sallowedimages

import rego.v1

digest := "sha256:6d3a4f5b2c1e0d9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"

params := {"registries": ["ghcr.io/mlplatform/"], "requireDigest": false}

prod_params := {"registries": ["ghcr.io/mlplatform/"], "requireDigest": true}

# What staging and prod enforce (policies/deploy): an exact release tag; a digest may follow it.
release_params := {"registries": ["ghcr.io/mlplatform/"], "requireDigest": false, "requiredTagRegex": `^[0-9]+\.[0-9]+\.[0-9]+$`}

pod(image) := {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": image}]}}

deployment(image) := {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}

test_allowed_registry_with_tag if {
	p := params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("ghcr.io/mlplatform/model-serving:0.1.0")} with input.parameters as p
	count(v) == 0
}

test_other_registry_denied if {
	p := params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("docker.io/library/python:3.11")} with input.parameters as p
	count(v) == 1
	some x in v
	contains(x.msg, "is not from an allowed registry")
}

test_lookalike_registry_denied if {
	p := params
	v := data.k8sallowedimages.violation with input.review as {"object": pod("ghcr.io/mlplatform-evil/x:1")} with input.parameters as p
	count(v) == 1
}

test_latest_denied if {
	p := params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("ghcr.io/mlplatform/model-serving:latest")} with input.parameters as p
	count(v) == 1
	some x in v
	contains(x.msg, "uses the :latest tag")
}

test_untagged_denied if {
	p := params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("ghcr.io/mlplatform/model-serving")} with input.parameters as p
	count(v) == 1
	some x in v
	contains(x.msg, "has no tag")
}

test_registry_port_is_not_a_tag if {
	v := data.k8sallowedimages.violation with input.review as {"object": pod("localhost:5000/app")} with input.parameters as {"registries": ["localhost:5000/"]}
	count(v) == 1
	some x in v
	contains(x.msg, "has no tag")
}

test_digest_required_in_prod if {
	p := prod_params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("ghcr.io/mlplatform/model-serving:0.1.0")} with input.parameters as p
	count(v) == 1
	some x in v
	contains(x.msg, "not pinned by digest")
}

test_digest_pinned_allowed_in_prod if {
	p := prod_params
	d := digest
	v := data.k8sallowedimages.violation with input.review as {"object": deployment(concat("", ["ghcr.io/mlplatform/model-serving:0.1.0@", d]))} with input.parameters as p
	count(v) == 0
}

test_latest_with_digest_still_denied if {
	p := prod_params
	d := digest
	v := data.k8sallowedimages.violation with input.review as {"object": deployment(concat("", ["ghcr.io/mlplatform/model-serving:latest@", d]))} with input.parameters as p
	count(v) == 1
}

test_init_and_cronjob_containers_checked if {
	p := params
	obj := {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
		"initContainers": [{"name": "init", "image": "busybox"}],
		"containers": [{"name": "job", "image": "ghcr.io/mlplatform/job:1"}],
	}}}}}}
	v := data.k8sallowedimages.violation with input.review as {"object": obj} with input.parameters as p
	count(v) == 2
}

test_exempt_images if {
	v := data.k8sallowedimages.violation with input.review as {"object": pod("registry.k8s.io/pause")} with input.parameters as {"registries": ["ghcr.io/mlplatform/"], "exemptImages": ["registry.k8s.io/pause"]}
	count(v) == 0
}

test_exact_tag_without_digest_allowed_for_release if {
	p := release_params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("ghcr.io/mlplatform/model-serving:0.2.0")} with input.parameters as p
	count(v) == 0
}

test_exact_tag_with_digest_allowed_for_release if {
	p := release_params
	d := digest
	v := data.k8sallowedimages.violation with input.review as {"object": deployment(concat("", ["ghcr.io/mlplatform/model-serving:0.2.0@", d]))} with input.parameters as p
	count(v) == 0
}

test_every_inexact_tag_denied_for_release if {
	p := release_params
	denied := {tag |
		some tag in ["0.2", "main", "0.2.0-dirty", "v0.2.0"]
		v := data.k8sallowedimages.violation with input.review as {"object": deployment(concat("", ["ghcr.io/mlplatform/model-serving:", tag]))} with input.parameters as p
		count(v) == 1
		some x in v
		contains(x.msg, "is not pinned to an exact version tag")
	}
	count(denied) == 4
}

test_digest_without_tag_denied_for_release if {
	p := release_params
	d := digest
	v := data.k8sallowedimages.violation with input.review as {"object": deployment(concat("", ["ghcr.io/mlplatform/model-serving@", d]))} with input.parameters as p
	count(v) == 1
	some x in v
	contains(x.msg, "is not pinned to an exact version tag")
}

test_latest_denied_twice_for_release if {
	p := release_params
	v := data.k8sallowedimages.violation with input.review as {"object": deployment("ghcr.io/mlplatform/model-serving:latest")} with input.parameters as p
	count(v) == 2
}

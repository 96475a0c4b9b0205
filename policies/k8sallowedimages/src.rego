package k8sallowedimages

import rego.v1

# Container images must come from an allowed registry, never use the :latest tag (or no tag,
# which means latest), with requiredTagRegex carry an exact version tag (a digest may follow it:
# tag@sha256:...), and with requireDigest be pinned by sha256 digest.

violation contains {"msg": msg, "details": {"container": c.name, "image": c.image, "allowed_registries": registries}} if {
	some c in containers
	not exempt(c.image)
	not allowed_registry(c.image)
	msg := sprintf("%v <%v> container <%v> image <%v> is not from an allowed registry %v", [kind, name, c.name, c.image, registries])
}

violation contains {"msg": msg, "details": {"container": c.name, "image": c.image}} if {
	some c in containers
	not exempt(c.image)
	image_tag(c.image) == "latest"
	msg := sprintf("%v <%v> container <%v> image <%v> uses the :latest tag; pin a version", [kind, name, c.name, c.image])
}

violation contains {"msg": msg, "details": {"container": c.name, "image": c.image}} if {
	some c in containers
	not exempt(c.image)
	not image_tag(c.image)
	not has_digest(c.image)
	msg := sprintf("%v <%v> container <%v> image <%v> has no tag (implicitly :latest); pin a version", [kind, name, c.name, c.image])
}

violation contains {"msg": msg, "details": {"container": c.name, "image": c.image}} if {
	object.get(input.parameters, "requireDigest", false)
	some c in containers
	not exempt(c.image)
	not has_digest(c.image)
	msg := sprintf("%v <%v> container <%v> image <%v> is not pinned by digest (@sha256:...)", [kind, name, c.name, c.image])
}

violation contains {"msg": msg, "details": {"container": c.name, "image": c.image, "required_tag_regex": tag_regex}} if {
	tag_regex != ""
	some c in containers
	not exempt(c.image)
	not tag_matches(c.image)
	msg := sprintf("%v <%v> container <%v> image <%v> is not pinned to an exact version tag matching %v", [kind, name, c.name, c.image, tag_regex])
}

registries := object.get(input.parameters, "registries", [])

tag_regex := object.get(input.parameters, "requiredTagRegex", "")

tag_matches(image) if regex.match(tag_regex, image_tag(image))

allowed_registry(image) if {
	some prefix in registries
	startswith(image, prefix)
}

exempt(image) if {
	some prefix in object.get(input.parameters, "exemptImages", [])
	startswith(image, prefix)
}

has_digest(image) if regex.match(`@sha256:[a-f0-9]{64}$`, image)

# The tag is what follows ':' in the last path segment, digest removed (a registry port such as
# localhost:5000/app is in an earlier segment and is not a tag).
image_tag(image) := tag if {
	without_digest := split(image, "@")[0]
	segments := split(without_digest, "/")
	last := segments[count(segments) - 1]
	contains(last, ":")
	parts := split(last, ":")
	tag := parts[count(parts) - 1]
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

package k8singresstls

import rego.v1

# An Ingress must terminate TLS: a non-empty spec.tls, and (with requireHostCoverage) every rule
# host listed in some spec.tls[].hosts.

violation contains {"msg": msg, "details": {"ingress": name}} if {
	input.review.object.kind == "Ingress"
	count(object.get(input.review.object.spec, "tls", [])) == 0
	msg := sprintf("Ingress <%v> has no TLS: set spec.tls with a certificate secret", [name])
}

violation contains {"msg": msg, "details": {"ingress": name, "uncovered_hosts": uncovered}} if {
	input.review.object.kind == "Ingress"
	object.get(input.parameters, "requireHostCoverage", true)
	count(object.get(input.review.object.spec, "tls", [])) > 0
	uncovered := sort([h | some h in rule_hosts; not h in tls_hosts])
	count(uncovered) > 0
	msg := sprintf("Ingress <%v> serves hosts without TLS: %v", [name, uncovered])
}

name := object.get(input.review.object.metadata, "name", "")

rule_hosts contains rule.host if {
	some rule in input.review.object.spec.rules
	rule.host
}

tls_hosts contains host if {
	some tls in input.review.object.spec.tls
	some host in tls.hosts
}

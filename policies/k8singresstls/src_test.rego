package k8singresstls

import rego.v1

ingress(tls, hosts) := {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "model-serving"}, "spec": {
	"ingressClassName": "nginx",
	"tls": tls,
	"rules": [{"host": h, "http": {"paths": []}} | some h in hosts],
}}

test_tls_covering_hosts_allowed if {
	obj := ingress([{"hosts": ["api.example.com"], "secretName": "tls"}], ["api.example.com"])
	v := data.k8singresstls.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 0
}

test_no_tls_denied if {
	obj := ingress([], ["api.example.com"])
	v := data.k8singresstls.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 1
	some x in v
	x.msg == "Ingress <model-serving> has no TLS: set spec.tls with a certificate secret"
}

test_tls_field_absent_denied if {
	obj := {"kind": "Ingress", "metadata": {"name": "i"}, "spec": {"rules": [{"host": "a.example.com"}]}}
	v := data.k8singresstls.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 1
}

test_uncovered_host_denied if {
	obj := ingress([{"hosts": ["a.example.com"], "secretName": "tls"}], ["a.example.com", "b.example.com"])
	v := data.k8singresstls.violation with input.review as {"object": obj} with input.parameters as {}
	count(v) == 1
	some x in v
	x.details.uncovered_hosts == ["b.example.com"]
}

test_host_coverage_can_be_turned_off if {
	obj := ingress([{"hosts": ["a.example.com"], "secretName": "tls"}], ["a.example.com", "b.example.com"])
	v := data.k8singresstls.violation with input.review as {"object": obj} with input.parameters as {"requireHostCoverage": false}
	count(v) == 0
}

test_other_kinds_ignored if {
	v := data.k8singresstls.violation with input.review as {"object": {"kind": "Service", "metadata": {"name": "s"}, "spec": {}}} with input.parameters as {}
	count(v) == 0
}

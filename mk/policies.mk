# Gatekeeper policies (policies/<policy>/): see docs/security.md.
.PHONY: policy-templates

# Put each policy's src.rego into its ConstraintTemplate (policies/<policy>/template.yaml);
# tests/policies/test_policies.py fails when a template is not current.
policy-templates: venv
	$(PY) scripts/gatekeeper_templates.py

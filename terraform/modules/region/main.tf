# One geoscim region with sane defaults: a detached `geoscim serve` process on this machine,
# its region file written from these settings. Every region of a cluster gets the same
# `cluster` list, so their DNS routing tables agree and each knows its peers.

terraform {
  required_providers {
    geoscim = {
      source = "geoscim.local/geoscim/geoscim"
    }
  }
}

variable "name" {
  description = "Region name (a-z 0-9 - _), one of cluster[*].name."
  type        = string
}

variable "cluster" {
  description = "Every region of the cluster: name, http, quic and dns ip:port, lat, lon, serves (CIDRs)."
  type = list(object({
    name   = string
    http   = string
    quic   = string
    dns    = string
    lat    = number
    lon    = number
    serves = list(string)
  }))
}

variable "work_dir" {
  description = "Folder for the region file, log, pid file and data."
  type        = string
}

variable "certs_dir" {
  description = "Folder with the cluster CA and this region's certificate (geoscim_cluster_certs.dir)."
  type        = string
}

variable "tokens" {
  description = "Tenant tokens the region accepts: tenant and sha256 (geoscim_token.*.sha256)."
  type        = list(object({ tenant = string, sha256 = string }))
  default     = []
}

variable "admin_token_hashes" {
  description = "SHA-256 of the admin tokens the region accepts."
  type        = list(string)
  default     = []
}

variable "replication_mode" {
  description = "async: 2xx after the local commit; sync: 2xx once write_quorum regions hold it."
  type        = string
  default     = "async"
}

variable "write_quorum" {
  description = "Regions (this one included) that must hold a quorum write."
  type        = number
  default     = 2
}

variable "keep_data" {
  description = "Keep the data folder when the region is destroyed, so taking it down and back keeps its data."
  type        = bool
  default     = true
}

variable "env" {
  description = "Further GEOSCIM_* settings (see the README's configuration table)."
  type        = map(string)
  default     = {}
}

variable "tenant_homes" {
  description = "tenant -> home region: <tenant>.<zone> answers its home first while it is healthy."
  type        = map(string)
  default     = {}
}

variable "netns" {
  description = "Run inside this network namespace (geoscim_network.<n>.namespaces[<name>]; needs root). null: the root namespace."
  type        = string
  default     = null
}

resource "geoscim_region" "this" {
  name               = var.name
  cluster            = var.cluster
  work_dir           = var.work_dir
  certs_dir          = var.certs_dir
  tokens             = var.tokens
  admin_token_hashes = var.admin_token_hashes
  replication_mode   = var.replication_mode
  write_quorum       = var.write_quorum
  keep_data          = var.keep_data
  env                = var.env
  tenant_homes       = var.tenant_homes
  netns              = var.netns
}

output "name" {
  value = geoscim_region.this.name
}

output "http_url" {
  description = "The region's base URL (SCIM under /scim/v2)."
  value       = geoscim_region.this.http_url
}

output "http" {
  value = one([for m in var.cluster : m.http if m.name == var.name])
}

output "launch_file" {
  description = "What geoscim_fault.region takes."
  value       = geoscim_region.this.launch_file
}

output "pid" {
  value = geoscim_region.this.pid
}

output "log_file" {
  value = geoscim_region.this.log_file
}

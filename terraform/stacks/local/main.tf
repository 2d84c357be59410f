# The local test stack: three geoscim regions on this machine, each on its own loopback address
# (127.0.7.1-3, HTTP :8080, QUIC :7100, DNS :5300), with their certificates and tokens. Take
# regions away with `down`, break them with `faults`, provision users through DNS with
# `provision`, and read what the cluster says in the `cluster` output.
#
# With `netns = true` (as root) every region runs in a network namespace of its own on
# 10.231.(i+1).2 instead, linked through a router namespace (geoscim_network), so faults can
# also cut (`partition`) and slow (`degrade`) the links between regions; the root namespace
# still reaches every region.
#
#   scripts/terraform -chdir=terraform/stacks/local init
#   scripts/terraform -chdir=terraform/stacks/local apply
#   scripts/terraform -chdir=terraform/stacks/local apply -var 'down=["eu"]'
#   scripts/terraform -chdir=terraform/stacks/local test
#
# See terraform/README.md (the runbook).

terraform {
  required_version = ">= 1.6"
  required_providers {
    geoscim = {
      source = "geoscim.local/geoscim/geoscim"
    }
  }
}

provider "geoscim" {}

locals {
  work_dir = var.work_dir != "" ? var.work_dir : abspath("${path.root}/../../../build/terraform/${var.netns ? "netns" : "local"}")
  # Each region's address: its loopback address, or its address in the network.
  ips = var.netns ? geoscim_network.this[0].addresses : { for name, r in var.regions : name => r.ip }
  cluster = [for name, r in var.regions : {
    name   = name
    http   = "${local.ips[name]}:8080"
    quic   = "${local.ips[name]}:7100"
    dns    = "${local.ips[name]}:5300"
    lat    = r.lat
    lon    = r.lon
    serves = r.serves
  }]
  # Regions that run (not taken away with `down`).
  running = { for name, r in var.regions : name => r if !contains(var.down, name) }
  # Regions that should not answer: taken away, or held down by a process fault (a
  # partitioned or degraded region still answers whoever reaches it).
  lost = distinct(concat(var.down, [for f in var.faults : f.region if contains(["kill", "stop"], f.kind)]))
  # The regions a client can still read from.
  survivors   = [for name, r in var.regions : name if !contains(local.lost, name)]
  dns_servers = join(",", [for m in local.cluster : m.dns])
  dns_of      = { for m in local.cluster : m.name => m.dns }
  # Every (userName, region) that data.geoscim_user.checks reads.
  user_checks = merge([for u, rs in var.check_users : {
    for r in(length(rs) > 0 ? rs : local.survivors) : "${u}@${r}" => { user = u, region = r }
  }]...)
}

# With netns: a namespace per region, a router between them and a host link from here.
resource "geoscim_network" "this" {
  count = var.netns ? 1 : 0

  name     = var.network_name
  regions  = keys(var.regions)
  cidr     = var.network_cidr
  work_dir = local.work_dir
}

resource "geoscim_cluster_certs" "this" {
  dir     = "${local.work_dir}/certs"
  regions = keys(var.regions)
}

resource "geoscim_token" "tenant" {
  tenant = "default"
}

resource "geoscim_token" "admin" {
  admin = true
}

module "region" {
  source   = "../../modules/region"
  for_each = local.running

  name               = each.key
  cluster            = local.cluster
  work_dir           = local.work_dir
  certs_dir          = geoscim_cluster_certs.this.dir
  tokens             = [{ tenant = "default", sha256 = geoscim_token.tenant.sha256 }]
  admin_token_hashes = [geoscim_token.admin.sha256]
  replication_mode   = var.replication_mode
  write_quorum       = var.write_quorum
  keep_data          = true
  env                = var.region_env
  tenant_homes       = { default = "eu" }
  netns              = var.netns ? geoscim_network.this[0].namespaces[each.key] : null
}

resource "geoscim_fault" "this" {
  for_each = { for f in var.faults : "${f.kind}-${f.region}" => f }

  kind = each.value.kind
  # kill and stop: the region's process.
  region = contains(["kill", "stop"], each.value.kind) ? module.region[each.value.region].launch_file : null
  http   = contains(["kill", "stop"], each.value.kind) ? module.region[each.value.region].http : null
  # partition and degrade: the region's links in the network.
  network      = contains(["partition", "degrade"], each.value.kind) ? geoscim_network.this[0].record_file : null
  side_a       = contains(["partition", "degrade"], each.value.kind) ? [each.value.region] : null
  side_b       = each.value.kind == "partition" ? each.value.others : null
  delay_ms     = each.value.delay_ms
  jitter_ms    = each.value.jitter_ms
  loss_percent = each.value.loss_percent

  depends_on = [module.region]
}

# Provisioning as an IdP does it: idp-sim resolves the service name at the responders (posing
# as a client in the given network with ECS), writes users and groups wherever DNS sends it,
# retries across failures, then reads every acknowledged write back from every surviving
# region. It exits non-zero when one is missing, which fails the apply.
resource "terraform_data" "provision" {
  for_each = var.provision

  input = each.value
  provisioner "local-exec" {
    command = join(" ", [
      var.geoscim_bin, "idp-sim", "--json",
      "--dns", each.value.side == null ? local.dns_servers : join(",", [for n in each.value.side : local.dns_of[n]]),
      "--ecs", each.value.client_subnet,
      "--port", "8080",
      "--regions", join(",", [for n in(each.value.side == null ? local.survivors : each.value.side) : "http://${local.ips[n]}:8080"]),
      "--users", tostring(each.value.users),
      "--groups", "2",
      "--duration", tostring(each.value.duration),
      "--attempts", tostring(each.value.attempts),
      "--settle-secs", "30",
      "--run-id", each.key,
      ">", "${local.work_dir}/idp-sim-${each.key}.json",
    ])
    environment = {
      GEOSCIM_TOKEN = geoscim_token.tenant.token
    }
  }
  depends_on = [module.region, geoscim_fault.this]
}

# What the cluster says now (read after the regions, faults and provisioning above changed).
data "geoscim_cluster" "now" {
  cluster        = local.cluster
  admin_token    = geoscim_token.admin.token
  client_subnets = var.client_subnets
  expect_down    = local.lost
  wait_for       = var.wait_for
  timeout_ms     = var.wait_timeout_ms
  report_file    = "${local.work_dir}/cluster-report.jsonl"
  label          = var.step
  depends_on     = [module.region, geoscim_fault.this, terraform_data.provision]
}

# A user provisioned earlier, as every surviving region reads it.
data "geoscim_user" "check" {
  for_each = var.check_user == "" ? toset([]) : toset(local.survivors)

  url        = "http://${local.ips[each.key]}:8080"
  token      = geoscim_token.tenant.token
  user_name  = var.check_user
  wait_ms    = 10000
  depends_on = [module.region, geoscim_fault.this, terraform_data.provision]
}

# Several users, each as the regions named for it read it (check_users).
data "geoscim_user" "checks" {
  for_each = local.user_checks

  url        = "http://${local.ips[each.value.region]}:8080"
  token      = geoscim_token.tenant.token
  user_name  = each.value.user
  wait_ms    = 10000
  depends_on = [module.region, geoscim_fault.this, terraform_data.provision]
}

# DNS as one side of a partition sees it (dns_view): its responders, asked from here, until
# none of their answers names a region of the other side.
data "geoscim_cluster" "view" {
  count = var.dns_view == null ? 0 : 1

  cluster        = [for m in local.cluster : m if contains(var.dns_view.from, m.name)]
  admin_token    = geoscim_token.admin.token
  client_subnets = var.client_subnets
  expect_down    = var.dns_view.avoid
  wait_for       = "answers"
  timeout_ms     = var.wait_timeout_ms
  report_file    = "${local.work_dir}/cluster-report.jsonl"
  label          = "${var.step} (dns of ${join(",", var.dns_view.from)})"
  depends_on     = [module.region, geoscim_fault.this, terraform_data.provision]
}

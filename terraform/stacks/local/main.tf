# The local test stack: three geoscim regions on this machine, each on its own loopback address
# (127.0.7.1-3, HTTP :8080, QUIC :7100, DNS :5300), with their certificates and tokens. Take
# regions away with `down`, break them with `faults`, provision users through DNS with
# `provision`, and read what the cluster says in the `cluster` output.
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
  work_dir = var.work_dir != "" ? var.work_dir : abspath("${path.root}/../../../build/terraform/local")
  cluster = [for name, r in var.regions : {
    name   = name
    http   = "${r.ip}:8080"
    quic   = "${r.ip}:7100"
    dns    = "${r.ip}:5300"
    lat    = r.lat
    lon    = r.lon
    serves = r.serves
  }]
  # Regions that run (not taken away with `down`).
  running = { for name, r in var.regions : name => r if !contains(var.down, name) }
  # Regions that should not answer: taken away, or held by a fault.
  lost = distinct(concat(var.down, [for f in var.faults : f.region]))
  # The regions a client can still read from.
  survivors   = [for name, r in var.regions : name if !contains(local.lost, name)]
  dns_servers = join(",", [for m in local.cluster : m.dns])
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
}

resource "geoscim_fault" "this" {
  for_each = { for f in var.faults : "${f.kind}-${f.region}" => f }

  kind   = each.value.kind
  region = module.region[each.value.region].launch_file
  http   = module.region[each.value.region].http
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
      "--dns", local.dns_servers,
      "--ecs", each.value.client_subnet,
      "--port", "8080",
      "--regions", join(",", [for n in local.survivors : "http://${var.regions[n].ip}:8080"]),
      "--users", tostring(each.value.users),
      "--groups", "2",
      "--duration", "60",
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

  url        = "http://${var.regions[each.key].ip}:8080"
  token      = geoscim_token.tenant.token
  user_name  = var.check_user
  wait_ms    = 10000
  depends_on = [module.region, geoscim_fault.this, terraform_data.provision]
}

# A network partition, rehearsed with every region in a network namespace of its own
# (netns = true; needs root: scripts/terraform-test runs this file only as root):
#   all up -> provision -> eu cut off from us and ap (a partition fault: blackhole rules in the
#   router namespace): us's and ap's DNS sends eu's clients to their side -> writes
#   acknowledged on both sides -> the partition removed: every region converges (equal
#   digests, zero lag) and holds the users written on both sides.
# The teardown removes the regions, then the namespaces; scripts/terraform-test then checks
# that no process and no namespace is left.

variables {
  netns = true
}

run "all_up_in_namespaces" {
  variables {
    step      = "netns_all_up"
    provision = { before = { client_subnet = "10.1.0.0/24", users = 10 } }
    wait_for  = "converged"
  }

  assert {
    condition     = length(data.geoscim_cluster.now.up) == 3 && data.geoscim_cluster.now.converged
    error_message = "every region must be up and converged, reached from the root namespace: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = data.geoscim_cluster.now.answers["eu"] == "eu" && data.geoscim_cluster.now.answers["us"] == "us"
    error_message = "each client network must get its own region: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = module.region["eu"].http == "${geoscim_network.this[0].addresses["eu"]}:8080" && startswith(module.region["eu"].http, "10.231.")
    error_message = "eu must listen on its address in the network: ${module.region["eu"].http}"
  }
}

run "eu_partitioned" {
  variables {
    step      = "eu_partitioned"
    faults    = [{ kind = "partition", region = "eu" }]
    provision = { before = { client_subnet = "10.1.0.0/24", users = 10 } }
    dns_view  = { from = ["us", "ap"], avoid = ["eu"] }
  }

  # view's waited_ms: from the cut until us's and ap's responders stop answering eu.
  assert {
    condition     = contains(["us", "ap"], data.geoscim_cluster.view[0].answers["eu"]) && data.geoscim_cluster.view[0].answers["us"] == "us"
    error_message = "us's and ap's responders must send eu's clients to their own side: ${jsonencode(data.geoscim_cluster.view[0].answers)}"
  }
  assert {
    condition     = length(data.geoscim_cluster.now.up) == 3
    error_message = "a partition takes no region down as seen from the root namespace: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = geoscim_fault.this["partition-eu"].side_b == tolist(["ap", "us"])
    error_message = "the partition's other side must default to every other region: ${jsonencode(geoscim_fault.this["partition-eu"].side_b)}"
  }
}

# Writes on both sides. eu alone has no write quorum (2): its offboardings (deletes and
# deactivations) are refused with 503 and stay unacknowledged; its creates and updates are
# acknowledged (async) and checked in eu by idp-sim.
run "writes_on_both_sides" {
  variables {
    step   = "writes_on_both_sides"
    faults = [{ kind = "partition", region = "eu" }]
    provision = {
      before  = { client_subnet = "10.1.0.0/24", users = 10 }
      eu_side = { client_subnet = "10.1.0.0/24", users = 20, side = ["eu"], duration = 10, attempts = 3 }
      us_side = { client_subnet = "10.2.0.0/24", users = 20, side = ["us", "ap"] }
    }
    check_users = {
      "eu_side-user-2@example.com" = ["eu"]
      "us_side-user-2@example.com" = ["us", "ap"]
    }
  }

  # idp-sim fails the apply when a write acknowledged on its side is missing there.
  assert {
    condition     = alltrue([for u in data.geoscim_user.checks : u.found])
    error_message = "writes acknowledged on each side must be readable on that side"
  }
  assert {
    condition     = data.geoscim_cluster.now.regions["eu"].lag > 0 && max(data.geoscim_cluster.now.regions["us"].lag, data.geoscim_cluster.now.regions["ap"].lag) > 0
    error_message = "both sides must hold writes the other has not acknowledged: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
}

run "partition_healed" {
  variables {
    step = "partition_healed"
    provision = {
      before  = { client_subnet = "10.1.0.0/24", users = 10 }
      eu_side = { client_subnet = "10.1.0.0/24", users = 20, side = ["eu"], duration = 10, attempts = 3 }
      us_side = { client_subnet = "10.2.0.0/24", users = 20, side = ["us", "ap"] }
    }
    check_users = {
      "eu_side-user-2@example.com"  = []
      "eu_side-user-17@example.com" = []
      "us_side-user-2@example.com"  = []
      "us_side-user-17@example.com" = []
    }
    wait_for = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged && data.geoscim_cluster.now.max_lag == 0 && data.geoscim_cluster.now.digests_equal
    error_message = "the cluster must converge once the partition heals: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  # Equal digests: every region holds the same changes, so every write acknowledged on either
  # side (idp-sim checked each on its side) is in every region; these read some back.
  assert {
    condition     = length(data.geoscim_user.checks) == 12 && alltrue([for u in data.geoscim_user.checks : u.found])
    error_message = "users written on both sides must be in every region: ${jsonencode({ for k, u in data.geoscim_user.checks : k => u.found })}"
  }
  assert {
    condition     = alltrue([for r in data.geoscim_cluster.now.regions : !r.diverged])
    error_message = "no region may report diverged documents"
  }
  assert {
    condition     = data.geoscim_cluster.now.answers["eu"] == "eu"
    error_message = "eu's clients must return to eu: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
}

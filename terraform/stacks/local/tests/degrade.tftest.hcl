# A degraded link, rehearsed with every region in a network namespace of its own (netns =
# true): eu's link gets 200 ms (± 20 ms) each way with tc netem (needs root and a kernel with
# sch_netem: scripts/terraform-test runs this file only where a netem qdisc can be made).
#   all up -> eu degraded -> provision through us while eu is slow -> replication still
#   converges (equal digests, zero lag; waited_ms is the convergence time over the slow link)
#   -> the degrade removed -> converged.

variables {
  netns = true
}

run "all_up_in_namespaces" {
  variables {
    step     = "degrade_all_up"
    wait_for = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged
    error_message = "the regions must converge: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
}

run "eu_degraded" {
  variables {
    step   = "eu_degraded"
    faults = [{ kind = "degrade", region = "eu", delay_ms = 200, jitter_ms = 20 }]
    provision = {
      slow = { client_subnet = "10.2.0.0/24", users = 20, side = ["us", "ap"] }
    }
    check_users = { "slow-user-2@example.com" = [] }
    wait_for    = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged && data.geoscim_cluster.now.max_lag == 0 && data.geoscim_cluster.now.digests_equal
    error_message = "replication must converge over a slow link: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = alltrue([for u in data.geoscim_user.checks : u.found])
    error_message = "eu must have the users written in us while its link was slow"
  }
  assert {
    condition     = length(data.geoscim_cluster.now.up) == 3
    error_message = "a slow region is still up: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
}

run "degrade_removed" {
  variables {
    step = "degrade_removed"
    provision = {
      slow = { client_subnet = "10.2.0.0/24", users = 20, side = ["us", "ap"] }
    }
    wait_for = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged
    error_message = "converged after the link is restored: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
}

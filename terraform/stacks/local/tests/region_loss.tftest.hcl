# Users idp-sim leaves active and present: index i with i % 3 == 2 and i % 5 != 4 (2, 17, …).
# Region loss, rehearsed against real regions on this machine, asserted step by step:
#   all up -> provision through DNS -> lose eu (down) -> provision while it is away -> restore,
#   converged -> lose eu again (kill fault) -> provision -> restore, converged -> hang eu
#   (stop fault: SIGSTOP) -> resume, converged.
# Every run applies the stack with its variables; state carries over from run to run, and
# `terraform test` destroys everything at the end (scripts/terraform-test then checks that no
# process is left behind). The waits are bounded polls inside data.geoscim_cluster.now: its
# waited_ms is the failover (wait_for = answers) or convergence (converged) time.

run "all_up" {
  variables {
    step      = "all_up"
    provision = { before = { client_subnet = "10.1.0.0/24", users = 20 } }
    wait_for  = "converged"
  }

  assert {
    condition     = length(data.geoscim_cluster.now.up) == 3
    error_message = "every region must be up: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = data.geoscim_cluster.now.answers["eu"] == "eu" && data.geoscim_cluster.now.answers["us"] == "us" && data.geoscim_cluster.now.answers["ap"] == "ap"
    error_message = "each client network must get its own region: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = data.geoscim_cluster.now.converged && data.geoscim_cluster.now.max_lag == 0 && data.geoscim_cluster.now.digests_equal
    error_message = "the regions must converge after provisioning: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = alltrue([for r in data.geoscim_cluster.now.regions : r.conflicts >= 0])
    error_message = "the admin API must report a conflict count in every region"
  }
}

run "eu_down" {
  variables {
    step       = "eu_down"
    down       = ["eu"]
    provision  = { before = { client_subnet = "10.1.0.0/24", users = 20 } }
    check_user = "before-user-2@example.com"
    wait_for   = "answers"
  }

  assert {
    condition     = !contains(data.geoscim_cluster.now.up, "eu") && length(data.geoscim_cluster.now.up) == 2
    error_message = "eu must be down and the others up: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = !contains(["eu", ""], data.geoscim_cluster.now.answers["eu"])
    error_message = "DNS must move eu's clients to a surviving region: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = data.geoscim_cluster.now.answers["us"] == "us" && data.geoscim_cluster.now.answers["ap"] == "ap"
    error_message = "the other clients keep their regions: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = length(data.geoscim_user.check) == 2 && alltrue([for u in data.geoscim_user.check : u.found && u.active])
    error_message = "a user acknowledged before the loss must be readable in every survivor"
  }
}

run "provision_while_eu_is_down" {
  variables {
    step = "provision_while_eu_is_down"
    down = ["eu"]
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    check_user = "during_down-user-17@example.com"
    wait_for   = "answers"
  }

  # idp-sim itself fails the apply when an acknowledged write is missing in a survivor.
  assert {
    condition     = length(data.geoscim_user.check) == 2 && alltrue([for u in data.geoscim_user.check : u.found])
    error_message = "users written while eu was down must be in every survivor"
  }
}

run "eu_back" {
  variables {
    step = "eu_back"
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    check_user = "during_down-user-17@example.com"
    wait_for   = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged && data.geoscim_cluster.now.max_lag == 0 && data.geoscim_cluster.now.digests_equal
    error_message = "eu must catch up: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = data.geoscim_cluster.now.answers["eu"] == "eu"
    error_message = "eu's clients must return to eu: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = data.geoscim_user.check["eu"].found
    error_message = "eu must have the users written while it was away"
  }
}

run "eu_killed" {
  variables {
    step   = "eu_killed"
    faults = [{ kind = "kill", region = "eu" }]
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    check_user = "during_down-user-2@example.com"
    wait_for   = "answers"
  }

  assert {
    condition     = !contains(data.geoscim_cluster.now.up, "eu") && !contains(["eu", ""], data.geoscim_cluster.now.answers["eu"])
    error_message = "after kill -9, eu must be down and DNS must avoid it: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = module.region["eu"].pid > 0 && length(data.geoscim_user.check) == 2 && alltrue([for u in data.geoscim_user.check : u.found])
    error_message = "acknowledged users must be readable in the survivors"
  }
}

run "provision_while_eu_is_killed" {
  variables {
    step   = "provision_while_eu_is_killed"
    faults = [{ kind = "kill", region = "eu" }]
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
      during_kill = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    check_user = "during_kill-user-17@example.com"
    wait_for   = "answers"
  }

  assert {
    condition     = alltrue([for u in data.geoscim_user.check : u.found])
    error_message = "users written while eu was killed must be in every survivor"
  }
}

run "eu_restored" {
  variables {
    step = "eu_restored"
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
      during_kill = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    check_user = "during_kill-user-17@example.com"
    wait_for   = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged && data.geoscim_cluster.now.max_lag == 0 && data.geoscim_cluster.now.digests_equal
    error_message = "the cluster must converge after the kill is undone: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
  assert {
    condition     = length(data.geoscim_user.check) == 3 && data.geoscim_user.check["eu"].found
    error_message = "eu must have the users written while it was killed"
  }
  assert {
    condition     = alltrue([for r in data.geoscim_cluster.now.regions : !r.diverged])
    error_message = "no region may report diverged documents"
  }
}

run "eu_hung" {
  variables {
    step   = "eu_hung"
    faults = [{ kind = "stop", region = "eu" }]
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
      during_kill = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    check_user = "during_kill-user-17@example.com"
    wait_for   = "answers"
  }

  assert {
    condition     = !contains(data.geoscim_cluster.now.up, "eu") && !contains(["eu", ""], data.geoscim_cluster.now.answers["eu"])
    error_message = "a hung eu (SIGSTOP) must read down and DNS must avoid it: ${jsonencode(data.geoscim_cluster.now.answers)}"
  }
  assert {
    condition     = alltrue([for u in data.geoscim_user.check : u.found])
    error_message = "the survivors must serve the users while eu hangs"
  }
}

run "eu_resumed" {
  variables {
    step = "eu_resumed"
    provision = {
      before      = { client_subnet = "10.1.0.0/24", users = 20 }
      during_down = { client_subnet = "10.1.0.0/24", users = 20 }
      during_kill = { client_subnet = "10.1.0.0/24", users = 20 }
    }
    wait_for = "converged"
  }

  assert {
    condition     = data.geoscim_cluster.now.converged && data.geoscim_cluster.now.answers["eu"] == "eu"
    error_message = "eu must be answered again and the cluster converged: ${jsonencode(data.geoscim_cluster.now.regions)}"
  }
}

variable "regions" {
  description = "The regions: loopback IP, coordinates and the client networks each serves first."
  type = map(object({
    ip     = string
    lat    = number
    lon    = number
    serves = list(string)
  }))
  default = {
    eu = { ip = "127.0.7.1", lat = 50.11, lon = 8.68, serves = ["10.1.0.0/16"] }
    us = { ip = "127.0.7.2", lat = 38.95, lon = -77.45, serves = ["10.2.0.0/16"] }
    ap = { ip = "127.0.7.3", lat = 1.35, lon = 103.82, serves = ["10.3.0.0/16"] }
  }
}

variable "down" {
  description = "Regions to take away (their processes are stopped; their data is kept)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for r in var.down : contains(["eu", "us", "ap"], r)])
    error_message = "Every entry of down must be a region of the stack: eu, us or ap."
  }
}

variable "faults" {
  description = <<-EOT
    Faults to hold, each undone when removed: kind and region. kill and stop act on the
    region's process; partition cuts region off from `others` (default: every other region);
    degrade slows region's link (delay_ms, jitter_ms, loss_percent). partition and degrade
    need netns = true.
  EOT
  type = list(object({
    kind         = string
    region       = string
    others       = optional(list(string))
    delay_ms     = optional(number)
    jitter_ms    = optional(number)
    loss_percent = optional(number)
  }))
  default = []
  validation {
    condition     = alltrue([for f in var.faults : contains(["kill", "stop", "partition", "degrade"], f.kind)])
    error_message = "A fault's kind is kill, stop, partition or degrade."
  }
  validation {
    condition     = var.netns || alltrue([for f in var.faults : contains(["kill", "stop"], f.kind)])
    error_message = "partition and degrade cut and slow links between network namespaces: set netns = true (needs root)."
  }
}

variable "netns" {
  description = "Run every region in a network namespace of its own (geoscim_network; needs root), so partition and degrade faults can act on their links."
  type        = bool
  default     = false
}

variable "network_cidr" {
  description = "With netns: the 10.x.0.0/16 of the links (region i gets 10.x.(i+1).2)."
  type        = string
  default     = "10.231.0.0/16"
}

variable "network_name" {
  description = "With netns: the prefix of the namespaces (<name>-<region>, <name>-wan) and of the host link (<name>-h)."
  type        = string
  default     = "gstf"
}

variable "provision" {
  description = <<-EOT
    idp-sim runs: label -> client network (ECS) and how many users. Each runs once, when it
    first appears. `side` (during a partition): the regions it may use, whose responders it
    asks and in which it checks every acknowledged write (default: every region not lost).
    `duration`: seconds after which it starts no new operation (default 60); `attempts`: tries
    per request (default 20; fewer where writes are expected to fail, e.g. offboarding in a
    region cut off from its write quorum).
  EOT
  type = map(object({
    client_subnet = string
    users         = number
    side          = optional(list(string))
    duration      = optional(number, 60)
    attempts      = optional(number, 20)
  }))
  default = {}
}

variable "check_user" {
  description = "A userName every surviving region must have (data.geoscim_user.check)."
  type        = string
  default     = ""
}

variable "check_users" {
  description = "userName -> the regions that must have it (empty: every region not lost); read by data.geoscim_user.checks."
  type        = map(list(string))
  default     = {}
}

variable "dns_view" {
  description = "DNS as the responders of the regions in `from` answer (data.geoscim_cluster.view), waiting until no answer names a region in `avoid`: the other side of a partition."
  type        = object({ from = list(string), avoid = list(string) })
  default     = null
}

variable "client_subnets" {
  description = "Client networks to ask DNS for (label -> CIDR), sent as EDNS Client Subnet."
  type        = map(string)
  default = {
    eu = "10.1.0.0/24"
    us = "10.2.0.0/24"
    ap = "10.3.0.0/24"
  }
}

variable "wait_for" {
  description = "What data.geoscim_cluster.now waits for: none, answers (DNS avoids the lost regions) or converged."
  type        = string
  default     = "none"
}

variable "wait_timeout_ms" {
  description = "How long data.geoscim_cluster.now waits."
  type        = number
  default     = 60000
}

variable "replication_mode" {
  type    = string
  default = "async"
}

variable "write_quorum" {
  type    = number
  default = 2
}

variable "region_env" {
  description = "GEOSCIM_* settings for every region. The defaults shorten digests so convergence shows quickly."
  type        = map(string)
  default = {
    GEOSCIM_REPLICATION__DIGEST_INTERVAL_MS = "1000"
  }
}

variable "work_dir" {
  description = "Where regions keep files and data (default: build/terraform/local in the repository)."
  type        = string
  default     = ""
}

variable "geoscim_bin" {
  description = "The geoscim binary for idp-sim (scripts/terraform sets TF_VAR_geoscim_bin)."
  type        = string
  default     = "geoscim"
}

variable "step" {
  description = "A label for this apply in build/terraform/local/cluster-report.jsonl (each test run names itself)."
  type        = string
  default     = "apply"
}

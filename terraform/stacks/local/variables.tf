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
  description = "Faults to hold: kind (kill or stop) and region. Each is undone when removed."
  type        = list(object({ kind = string, region = string }))
  default     = []
  validation {
    condition     = alltrue([for f in var.faults : contains(["kill", "stop", "partition", "degrade"], f.kind)])
    error_message = "A fault's kind is kill, stop, partition or degrade."
  }
}

variable "provision" {
  description = "idp-sim runs: label -> client network (ECS) and how many users. Each runs once, when it first appears."
  type        = map(object({ client_subnet = string, users = number }))
  default     = {}
}

variable "check_user" {
  description = "A userName every surviving region must have (data.geoscim_user.check)."
  type        = string
  default     = ""
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

variable "schedules" {
  description = "Schedule name => five-field cron expression (minute hour day-of-month month day-of-week), as `relay manifest` lists them."
  type        = map(string)

  validation {
    condition = alltrue([
      for cron in values(var.schedules) : length(split(" ", trimspace(replace(cron, "/\\s+/", " ")))) == 5
    ])
    error_message = "Each cron expression needs exactly five fields (minute hour day-of-month month day-of-week); macros such as @daily and a seconds field are not supported."
  }

  validation {
    # Cron fires when EITHER a restricted day-of-month OR a restricted day-of-week
    # matches; EventBridge needs "?" in one of them and cannot express the OR.
    condition = alltrue([
      for cron in values(var.schedules) : (
        split(" ", trimspace(replace(cron, "/\\s+/", " ")))[2] == "*" ||
        split(" ", trimspace(replace(cron, "/\\s+/", " ")))[4] == "*"
      )
    ])
    error_message = "A schedule restricts both day-of-month and day-of-week: cron ORs them, which EventBridge Scheduler cannot express (one of them must be \"?\"). Use \"*\" in one of the two fields."
  }

  validation {
    # EventBridge's day-of-week takes 1-7 or SUN-SAT with , - * ? L # but no "/" step;
    # this module converts 0-7 numbers and ranges and passes three-letter names through.
    condition = alltrue(flatten([
      for cron in values(var.schedules) : [
        for token in split(",", upper(split(" ", trimspace(replace(cron, "/\\s+/", " ")))[4])) :
        can(regex("^(\\*|[0-7]|[0-7]-[0-7]|[A-Z]{3}|[A-Z]{3}-[A-Z]{3})$", token))
      ]
    ]))
    error_message = "Day-of-week must be *, a number 0-7, a range a-b of numbers, a three-letter name or a range of names, joined by commas (no step, L or #: EventBridge Scheduler numbers days differently)."
  }
}

variable "event_patterns" {
  description = "Relay topic patterns (dot-separated segments; \"*\" one segment, \"**\" any number), as `relay manifest` lists them."
  type        = set(string)
  default     = []
}

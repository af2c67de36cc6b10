# Relay's schedules and topic patterns in EventBridge's terms (plain HCL, no provider).
#
# Five-field cron (croniter, Cloud Scheduler) to EventBridge Scheduler's six-field
# cron(minutes hours day-of-month month day-of-week year):
#
#   - "*/n" becomes "<first>/n" (0 for minutes and hours, 1 for day-of-month and month):
#     EventBridge's documented step form is start/increment;
#   - exactly one of day-of-month and day-of-week must be "?": a "*" day-of-week becomes
#     "?" (day-of-month kept), otherwise day-of-month is "*" and becomes "?"
#     (variables.tf refuses crons that restrict both);
#   - day-of-week numbers 0-7 (0 and 7 are Sunday) become names, since EventBridge numbers
#     Sunday 1 to Saturday 7: "1-5" becomes "MON-FRI", a range ending on 7 "a-SAT,SUN";
#   - the year is "*".
locals {
  day_names = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]

  fields = {
    for name, cron in var.schedules : name => split(" ", trimspace(replace(cron, "/\\s+/", " ")))
  }

  day_of_week = {
    for name, f in local.fields : name => join(",", [
      for token in split(",", upper(f[4])) : (
        can(regex("^[0-7]$", token)) ? local.day_names[tonumber(token)] : (
          can(regex("^[0-7]-[0-7]$", token)) ? (
            tonumber(split("-", token)[1]) == 7
            ? format("%s-SAT,SUN", local.day_names[tonumber(split("-", token)[0])])
            : format("%s-%s", local.day_names[tonumber(split("-", token)[0])], local.day_names[tonumber(split("-", token)[1])])
          ) : token
        )
      )
    ])
  }

  expressions = {
    for name, f in local.fields : name => format(
      "cron(%s %s %s %s %s *)",
      replace(f[0], "/^\\*\\//", "0/"),
      replace(f[1], "/^\\*\\//", "0/"),
      f[4] == "*" ? replace(f[2], "/^\\*\\//", "1/") : "?",
      replace(upper(f[3]), "/^\\*\\//", "1/"),
      f[4] == "*" ? "?" : local.day_of_week[name],
    )
  }
}

# Topic patterns to an EventBridge filter on detail-type (functions/aws.py reads the topic
# from detail-type). EventBridge's "*" wildcard spans dots, so the filter may match more
# topics than the pattern, never fewer; the engine applies the exact pattern afterwards:
#
#   - no "**": a wildcard filter with the pattern itself ("orders.*.created"; a pattern
#     without "*" matches exactly);
#   - with "**", which also matches no segment at all ("orders.**" matches "orders"): a
#     prefix filter on the text before the first "*", without its trailing dot, or the
#     wildcard "*" when that text is empty ("**", "**.created").
locals {
  detail_type_filters = {
    for pattern in var.event_patterns : pattern => (
      length(regexall("[*][*]", pattern)) == 0 ? { operator = "wildcard", value = pattern } : (
        trimsuffix(split("*", pattern)[0], ".") == ""
        ? { operator = "wildcard", value = "*" }
        : { operator = "prefix", value = trimsuffix(split("*", pattern)[0], ".") }
      )
    )
  }
}

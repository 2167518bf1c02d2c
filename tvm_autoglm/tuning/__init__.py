"""MetaSchedule tuning: databases, the tuning driver and applying records."""

"""Ways to run the flows: the offline quick start, served deployments, pool and block setup."""

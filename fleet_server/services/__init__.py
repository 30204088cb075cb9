"""Side effects of the fleet server beyond its database: the broker's accounts (`broker_auth`)."""

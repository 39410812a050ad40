"""Stacks of Boltzmann machines: deep belief networks and deep Boltzmann machines."""

"""Attacks: what a compromised board does, to measure what the defenses hold (attack_args).

Kept out of the product's honest client: each attack is a `LocalClient` subclass that overrides the hooks of what a
client says (`federation.client.LocalClient`: its statistics, its rows, its weights, its reports, what its process
sends besides its answers), in `attacks.clients`. Loaded by the simulation, the in-process grid and bench; a
deployment loads it only with `attack_args.red_team: true`, and says so on every start. This package's own import
loads nothing (`attacks.settings`, the attack_args section, is read by every config).
"""

"""Navigation goals and replayed SFT traces (paper §2.1.2).

outline  → what a real session did (searches, views, carts, checkout), in order
goals    → stage-1 (intent-neutral) and stage-2 (intent from the stratum) goals, by template or LLM
teacher  → a policy that replays the session's events on a storefront in the browser
examples → one chat example per step (system, user with goal/profile/progress/page, assistant)
judge    → keeps trajectories that reached the goal's required actions
dataset  → stage-1 / stage-2 JSONL, downsampled so every persona token in use appears
"""

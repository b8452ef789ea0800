"""Thin Ray Serve shells over the stages (`serving.stages`): each holds its stages, takes its
`user_config` through `reconfigure`, and does nothing a plain class could not do without Ray.

    Ingress (serving.http) ──► Recommender ──► Ranker (@serve.batch)
        └───────────────────► FeedbackSink
"""

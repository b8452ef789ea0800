"""Synthetic event generator: a latent world, a logging policy and users reacting to it.

Generative model (details in each module and in docs/data.md):

1. World (`world`): T topics in categories of sibling topics; topic centroids in R^D. Pins have a
   topic, a content embedding (centroid + Gaussian noise), a true quality, a popularity, a
   shoppable flag and a clickbait flag. Users have an activity level and a few interest topics,
   each with a strength at the period's start and end: stable, fading (falls to a tenth) or
   new (grows from zero; a sibling of an existing interest).
2. Logging policy (`logging_policy`): each day, requests arrive per user (Poisson); each request
   has a surface (homefeed | related) and a query pin, a pin the user engaged with on an earlier
   day in one of their interests, or a seed pin of an initial interest before any engagement.
   Candidates come mostly from the query pin's topic, some from sibling topics, some popular
   pins; the policy orders them (positions 0..n-1). cluster_id is left null: the feature
   pipeline attributes impressions by query pin.
3. Reactions (`engagement`): affinity = pin quality x the user's current interest strength in
   the pin's topic; closeup, save and click are Bernoulli draws with logits linear in affinity
   and log position; clickbait pins get a click lift. Click dwell is lognormal with a median
   growing with affinity (clickbait: short); long_click = dwell >= long_click_threshold_s.
4. Conversions (`conversions`): a click on a shoppable pin converts with a probability rising
   with affinity (clickbait: much lower), as an add_to_cart hours to days later and sometimes a
   checkout after it, each row carrying the request_id of the impression.

Target rates (`TargetRates`) are met on the first day by solving the logit intercepts; the
same config and seed give identical tables.
"""

from pinfeed.synthetic.config import (
    ConversionShape,
    DwellShape,
    EngagementShape,
    GeneratorConfig,
    LoggingPolicy,
    TargetRates,
)
from pinfeed.synthetic.generator import (
    GeneratedWorld,
    generate,
    generate_and_write,
    generate_world,
    write_truth,
)
from pinfeed.synthetic.summary import EventSummary, summarize, summary_table

__all__ = [
    "ConversionShape",
    "DwellShape",
    "EngagementShape",
    "EventSummary",
    "GeneratedWorld",
    "GeneratorConfig",
    "LoggingPolicy",
    "TargetRates",
    "generate",
    "generate_and_write",
    "generate_world",
    "summarize",
    "summary_table",
    "write_truth",
]

"""The serving stages as plain Python classes, testable in-process without Ray:

    online features (`features`, `pin_cache`, over the Feast adapter `online`)
    -> query selection (`selector`) -> retrieval (`retriever`) -> ranker model (`ranker`)
    -> calibration and utility (`scorer`)

`pipeline` composes one run's stages and `active` switches a replica from one run (or one set
of utility weights) to the next; `feedback` records and applies feedback events. The Serve
deployments in `serving.deployments` only host these.
"""

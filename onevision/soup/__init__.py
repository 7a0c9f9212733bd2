"""Model soups (Wortsman et al. 2022, arXiv 2203.05482): average fine-tunes of one start.

- `average`: the uniform soup, streamed shard by shard (`uniform_soup`);
- `greedy`: the greedy soup on a held-out split (`greedy_soup`);
- `grid`: the ingredient runs of one stage recipe over a hyperparameter grid (`plan_grid`).

Soups of different starts are refused by the start fingerprint every training export records
(`onevision_start.json`); it lives in `onevision.checkpoint.fingerprint`, below both training
and the soup. Nothing is imported here.
"""

"""The builder: validate an upload, keep its bytes, build and push the function image.

- :mod:`allinone.builder.validate`: pure checks of an upload (safe unzip, limits,
  syntax, the handler exists) before any image work;
- :mod:`allinone.builder.sources`: content-addressed archives of uploads on disk;
- :mod:`allinone.builder.builder`: the Docker build from ``imagedata/`` plus the
  function, and the push to the registry;
- :mod:`allinone.builder.reconciler`: turns Functions in etcd into images and status.
"""

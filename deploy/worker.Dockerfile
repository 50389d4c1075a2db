# syntax=docker/dockerfile:1
# TruthGPT worker images (docs/deploy.md). Two targets from one file, built from the repository root:
#
#   docker build -f deploy/worker.Dockerfile --target gpu -t truthgpt-worker:gpu .
#   docker build -f deploy/worker.Dockerfile --target cpu -t truthgpt-worker:cpu .
#
# gpu: CUDA 12 + cuDNN 9 runtime (what onnxruntime-node's cuda12 provider build links), Node 22, the
#      CUDA provider libraries for the locked onnxruntime-node version; one container per GPU.
# cpu: Node 22 only; runs every workflow and the CPU activities.
#
# Everything a worker needs comes from the environment at run time (infra/config.ts); nothing
# secret is baked into the image. This file is not built by CI: building it needs Docker and, for
# the gpu target, network access to NuGet (the provider download); running the gpu target needs an
# NVIDIA GPU and the NVIDIA container toolkit.

ARG NODE_IMAGE=node:22-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- dependencies: the locked tree, no install scripts (.npmrc), no dev dependencies ------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund

# The README's GPU opt-in: ORT's GPU package for this exact onnxruntime-node version puts
# libonnxruntime_providers_{cuda,shared,tensorrt}.so next to the native binding.
FROM deps AS deps-gpu
RUN ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js \
 && ls node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

# ---- cpu ----------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS cpu
WORKDIR /app
ENV TRUTHGPT_EP=cpu \
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
COPY --from=deps /app/node_modules ./node_modules
COPY . .
# The image can train: the doctor's tiny step runs on CPU at build time.
RUN node bin/truthgpt.js doctor --pool cpu
USER node
ENTRYPOINT ["node_modules/.bin/tsx", "workers/main.ts"]
CMD ["--role", "cpu"]

# ---- gpu ----------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS node

FROM ${CUDA_IMAGE} AS gpu
# Node from the official image (Ubuntu's own nodejs is too old for engines >= 20.19).
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && useradd --system --create-home truthgpt
WORKDIR /app
# Inside a container given one GPU (docker run --gpus device=N), that GPU is index 0.
ENV TRUTHGPT_EP=cuda \
    TRUTHGPT_DEVICE_ID=0 \
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
COPY --from=deps-gpu /app/node_modules ./node_modules
COPY . .
# No GPU at build time, but the loader can already say whether every library the CUDA provider
# links (CUDA 12 runtime, cuBLAS, cuFFT, cuRAND, cuDNN 9) resolves in this image.
RUN ! ldd node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so | grep 'not found'
USER truthgpt
# At start the worker runs the doctor's GPU checks and a tiny step on its device, and exits with
# the doctor's lines if anything is missing (workers/worker.ts).
ENTRYPOINT ["node_modules/.bin/tsx", "workers/main.ts"]
CMD ["--role", "gpu"]

export interface CudaKernel { op: string; domain: string; since: number; until: number | null; inputs: string[][]; types: Record<string, string[]> }

/** The null target: every request succeeds at once with its full length; reads return whatever the buffer held. */
import { parseSize } from './size.js';
import { type Target, TargetError } from './target.js';

export interface NullOptions {
  /** Bytes, or a size string such as '1G'. */
  size: number | string;
}

const nullTarget: Target<NullOptions> = {
  name: 'null',
  sync: true,
  open(options) {
    if (options.size === undefined) throw new TargetError('the null target needs a size (-s SIZE)');
    const size = parseSize(options.size);
    return { size, info: {} };
  },
  createQueue() {
    return {
      queueIo(_tag, _op, _flags, _offset, length) {
        return length;
      },
    };
  },
};

export default nullTarget;
